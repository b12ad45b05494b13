"""Benchmark (not a test): the reference on a checkpoint with gpt-oss-20b's REAL shapes and random weights.

Writes the checkpoint (about 13 GB, original layout, BF16 + MXFP4 as released) once, then, in a fresh
process so that writing does not count, runs a 32-token prompt and a few decode steps and prints peak RSS
and seconds per token. The foundation issue's bound: peak RSS <= 8 GB for the 32-token prompt.

    python bench/reference_memory.py [--dir /tmp/gpt-oss-20b-random] [--preset gpt-oss-20b] [--decode 2]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.config import PRESETS  # noqa: E402


def measure(path: Path, prompt_len: int, decode: int) -> dict:
    import numpy as np

    from reference.model import Model

    model = Model(path)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.config.vocab_size, size=prompt_len).tolist()
    cache = model.new_cache()
    t0 = time.perf_counter()
    logits = model.forward(prompt, cache)
    t_prompt = time.perf_counter() - t0
    rss_prompt = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t_decode = []
    for _ in range(decode):
        t0 = time.perf_counter()
        logits = model.forward([int(np.argmax(logits[-1]))], cache)
        t_decode.append(time.perf_counter() - t0)
    return {"prompt_tokens": prompt_len, "prompt_s": t_prompt, "prompt_s_per_token": t_prompt / prompt_len,
            "peak_rss_after_prompt_GB": rss_prompt / 1e9,
            "decode_s_per_token": sum(t_decode) / max(len(t_decode), 1),
            "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "finite": bool(np.all(np.isfinite(logits)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/gpt-oss-20b-random")
    ap.add_argument("--preset", default="gpt-oss-20b", choices=sorted(PRESETS))
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--decode", type=int, default=2)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = Path(args.dir)
    if args.measure:
        print(json.dumps(measure(path, args.prompt, args.decode)))
        return
    config = PRESETS[args.preset]
    cfg_file = path / "config.json"
    if not (cfg_file.is_file() and json.loads(cfg_file.read_text()) == config.to_json()):
        from reference.writer import write_checkpoint
        t0 = time.perf_counter()
        print(f"writing a random {args.preset} checkpoint to {path} ...", flush=True)
        write_checkpoint(path, config, seed=0)
        print(f"  written in {time.perf_counter() - t0:.0f} s", flush=True)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    out = subprocess.run([sys.executable, __file__, "--measure", "--dir", str(path), "--prompt", str(args.prompt),
                          "--decode", str(args.decode)], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nreference on {args.preset} shapes, random weights, checkpoint {size / 1e9:.1f} GB, "
          f"{os.cpu_count()} CPUs, numpy float64")
    print("| prompt tokens | prompt s | s/token (prompt) | s/token (decode) | peak RSS GB | bound GB |")
    print("|---|---|---|---|---|---|")
    print(f"| {r['prompt_tokens']} | {r['prompt_s']:.1f} | {r['prompt_s_per_token']:.2f} | "
          f"{r['decode_s_per_token']:.2f} | {r['peak_rss_GB']:.2f} | 8 |")
    if not r["finite"]:
        sys.exit("non-finite logits")
    if r["peak_rss_after_prompt_GB"] > 8:
        sys.exit(f"peak RSS {r['peak_rss_after_prompt_GB']:.2f} GB exceeds the 8 GB bound")


if __name__ == "__main__":
    main()
