"""Load benchmark of `python -m optimized serve`: N concurrent clients against the server as a subprocess.

    PYTHONPATH=. python bench/serve_load.py --model tiny --clients 8 --requests 48
    PYTHONPATH=. python bench/serve_load.py --model mid --clients 8 --requests 32

What it does: starts the server (loopback, port 0) on the bundled tiny checkpoint or bench/engine_cpu.py's `mid`
random checkpoint (written on first use), sends every request once alone (the sequential pass: latency and
throughput at batch 1, and each request's twin), then all of them from N client threads (the concurrent pass), and
prints a markdown table: p50 / p99 latency, requests/s, generated tokens/s, how many concurrent replies equal their
twins token for token, and the server's RSS before and after the concurrent pass. Requests are greedy completions
with token-id prompts (random ids, fixed seed), so the work is the same in both passes. Clients and server share the
machine's cores; raw http.client keeps the clients' cost small. Results: BENCHMARKS.md "Serving".
"""
import argparse
import http.client
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkpoint(model: str) -> Path:
    if model == "tiny":
        return ROOT / "golden" / "data" / "checkpoints" / "tiny"
    sys.path.insert(0, str(ROOT))
    from bench.engine_cpu import checkpoint as bench_checkpoint  # one home for the mid shape
    return bench_checkpoint("mid", "original")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(port: int, body: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = conn.getresponse()
    out = json.loads(r.read())
    conn.close()
    assert r.status == 200, out
    return time.perf_counter() - t, out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "mid"], default="tiny")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens (each request: 1/2x to 3/2x this)")
    ap.add_argument("--new", type=int, default=32, help="new tokens a request")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    args = ap.parse_args()

    path = checkpoint(args.model)
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    cmd = [sys.executable, "-m", "optimized", "serve", "--checkpoint", str(path), "--port", "0", "--dtype",
           args.dtype, "--max-batch", str(args.max_batch), "--max-pending", str(args.requests + 1),
           "--context", str(2 * args.prompt + args.new + 8)]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        port = int(re.search(r":(\d+)/v1", line).group(1))
        rng = random.Random(0)
        reqs = [{"model": path.parent.name if path.name == "original" else path.name, "temperature": 0,
                 "max_tokens": args.new, "return_token_ids": True,
                 "prompt": [rng.randrange(vocab) for _ in range(rng.randint(args.prompt // 2, 3 * args.prompt // 2))]}
                for _ in range(args.requests)]
        post(port, reqs[0])  # warm-up (the C kernels' first calls, allocator)
        t0 = time.perf_counter()
        alone = [post(port, r) for r in reqs]
        seq_wall = time.perf_counter() - t0
        before = rss_mb(server.pid)
        results: list = [None] * len(reqs)

        def worker(k):
            for i in range(k, len(reqs), args.clients):
                results[i] = post(port, reqs[i])

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        con_wall = time.perf_counter() - t0
        after = rss_mb(server.pid)
        same = sum(r[1]["choices"][0]["token_ids"] == a[1]["choices"][0]["token_ids"] for r, a in zip(results, alone))
        tokens = sum(r[1]["usage"]["completion_tokens"] for r in results)
    finally:
        server.terminate()
        server.wait(30)

    print(f"model {args.model} ({args.dtype}), {args.requests} requests of {args.prompt // 2}-{3 * args.prompt // 2} "
          f"prompt + {args.new} new tokens, server --max-batch {args.max_batch}")
    print("| pass | clients | p50 latency | p99 latency | requests/s | generated tok/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, rs, wall in (("sequential", 1, alone, seq_wall), ("concurrent", args.clients, results, con_wall)):
        lat = [r[0] for r in rs]
        print(f"| {name} | {n} | {percentile(lat, 50):.3f} s | {percentile(lat, 99):.3f} s | {len(rs) / wall:.2f} | "
              f"{tokens / wall:.1f} |")
    print(f"concurrent replies equal to their sequential twins: {same}/{len(reqs)}; server RSS {before:.0f} MB before "
          f"the concurrent pass, {after:.0f} MB after")


if __name__ == "__main__":
    main()
