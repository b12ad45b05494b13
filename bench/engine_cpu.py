"""CPU benchmark (not a test): prefill and decode tokens/s of this engine (fp32, bf16) against llama.cpp (the
engine a CPU user would pick instead: GGUFs of the same checkpoint made by llama.cpp's own converter), HF
transformers and the reference, on one synthetic checkpoint: same weights, same threads, batch 1.

    nice python bench/engine_cpu.py [--shape mid|20b] [--threads 2] [--prompt 128,512] [--new 32] [--rounds 9]
                                    [--impls optimized-fp32,optimized-bf16,llamacpp-bf16,...]

--shape mid: 8 layers, hidden 768, 32 experts (top-4), vocab 32768 (CONFIG below); 20b: gpt-oss-20b's real
shapes (reference.config.PRESETS). Random weights written once by reference.writer, both layouts, under
/tmp/gpt-oss-bench/<shape>; transformers loads the HF layout (it dequantizes the MXFP4 experts on CPU), the
engine the original layout (experts stay packed), llama.cpp a GGUF converted from the HF layout (experts stay
MXFP4; the dense matrices in the GGUF's type: bf16, f32 or Q8_0, which also quantizes activations to 8 bits).
Each implementation runs in its own process, loaded once and resident; the parent runs --rounds interleaved rounds
(every implementation once a round, then a streaming-read measurement) and reports each one's median and best
round: on a shared machine a burst of other work slows one round of everyone. --serial (the default for --shape
20b, where two 14 GB models do not fit in memory together) runs one implementation's rounds at a time.
Printed: the CPU's features, the kernels that ran (this engine's dense projections and MXFP4 experts; llama.cpp's
build), the weight bytes each decode step reads and the bandwidth that implies against the streaming read
(`stream_read`: a 1 GiB float32 sum with the same threads). Results and their commands: BENCHMARKS.md.
"""
import argparse
import multiprocessing
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch

from reference.config import PRESETS, Config

CONFIG = Config(num_hidden_layers=8, num_experts=32, experts_per_token=4, vocab_size=32768, hidden_size=768,
                intermediate_size=768, swiglu_limit=7.0, head_dim=64, num_attention_heads=12, num_key_value_heads=4,
                sliding_window=128, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
                rope_ntk_alpha=1.0, rope_ntk_beta=32.0)
SHAPES = {"mid": CONFIG, "20b": PRESETS["gpt-oss-20b"]}
ROOT = Path("/tmp/gpt-oss-bench")
IMPLS = ["optimized-fp32", "optimized-bf16", "optimized-bf16+int8", "llamacpp-bf16", "llamacpp-f32", "llamacpp-q8_0",
         "optimized-fp32+int8", "transformers-fp32", "transformers-bf16", "reference"]
# optimized-*+int8: the engine's opt-in int8 activations for the experts (Q8_0, as llama.cpp's CPU path: the
# class bfloat16+int8, the same precision as the llama.cpp rows; the other optimized rows are the released one)
DEFAULT_IMPLS = {"mid": IMPLS[:6], "20b": ["optimized-fp32", "optimized-bf16", "optimized-bf16+int8",
                                            "llamacpp-bf16"]}  # + --impls
CPU_FLAGS = ("avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_bf16")


def checkpoint(shape: str, layout: str) -> Path:
    """The shape's random checkpoint in `layout` ("original" or "hf"), written on first use (20b: ~14 GB, ~2 min)."""
    from reference.writer import write_checkpoint
    path = ROOT / ("" if shape == "mid" else shape) / layout  # mid keeps the folder earlier runs wrote
    if not (path / "config.json").exists():
        write_checkpoint(path, SHAPES[shape], seed=1, layout=layout)
    return path


def gguf(shape: str, outtype: str) -> Path:
    """The shape's checkpoint as a GGUF of `outtype`, made by llama.cpp's own converter (cached):
    conformance.impls.llamacpp.gguf_for."""
    from conformance.impls.llamacpp import gguf_for
    return gguf_for(checkpoint(shape, "hf"), outtype=outtype)


class ReferenceRunner:
    def __init__(self, shape, threads, context):
        from reference.model import Model
        self.model = Model(checkpoint(shape, "original"))

    def info(self):
        return {"kernels": "NumPy float64"}

    def run(self, prompt, steps):
        m, cache = self.model, self.model.new_cache()
        t = time.perf_counter()
        logits = m.forward(prompt, cache)
        pre = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(min(steps, 2)):  # ~1 s a step on the mid shape
            logits = m.forward([int(logits[-1].argmax())], cache)
        return len(prompt) / pre, min(steps, 2) / (time.perf_counter() - t)


class EngineRunner:
    def __init__(self, shape, threads, context, dtype, activations=None):
        from optimized.generate import Engine
        self.dtype, self.hidden, self.activations = dtype, SHAPES[shape].hidden_size, activations
        self.engine = Engine.load(checkpoint(shape, "original"), "cpu", dtype, activations=activations,
                                  context=context)
        self.engine.generate([[1, 2, 3, 4, 5, 6, 7, 8]], 4)  # warm-up

    def info(self):
        from optimized import linear, mxfp4_cpu
        op = "bf16_matvec" if self.dtype == torch.bfloat16 else "bf16_f32_matmul"
        experts = mxfp4_cpu.kernel_name(int8=self.activations == "int8")
        return {"kernels": f"dense {linear.kernel_name(op, self.hidden)}, experts {experts}"}

    def run(self, prompt, steps):
        r = self.engine.generate([prompt], steps + 1)
        return r.prefill_tokens / r.prefill_s, r.decode_tokens / r.decode_s


class TransformersRunner:
    def __init__(self, shape, threads, context, dtype):
        from transformers.utils import logging
        from conformance.impls.transformers import load_hf_model
        logging.set_verbosity_error()
        self.model = load_hf_model(str(checkpoint(shape, "hf")), dtype).eval()  # MXFP4 dequantized at load
        with torch.inference_mode():
            self.model(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]), use_cache=True)  # warm-up

    def info(self):
        return {"kernels": f"torch {torch.__version__}"}

    @torch.inference_mode()
    def run(self, prompt, steps):
        m, ids = self.model, torch.tensor([prompt])
        t = time.perf_counter()
        out = m(ids, use_cache=True)
        pre = time.perf_counter() - t
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(steps):
            out = m(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        return len(prompt) / pre, steps / (time.perf_counter() - t)


class LlamaCppRunner:
    """llama.cpp through llama-cpp-python: flash attention on, f16 KV cache (its default), greedy by argmax of
    the last logits (as the other rows), prompt in one batch of up to 512 tokens."""

    def __init__(self, shape, threads, context, outtype):
        import llama_cpp
        self.path = gguf(shape, outtype)
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=context, n_batch=512, n_ubatch=512,
                                   n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False)
        self.llm.reset()
        self.llm.eval([1, 2, 3, 4, 5, 6, 7, 8])  # warm-up

    def info(self):
        import llama_cpp
        return {"kernels": f"llama-cpp-python {llama_cpp.__version__}", "gguf": str(self.path),
                "system_info": llama_cpp.llama_print_system_info().decode()}

    def run(self, prompt, steps):
        import numpy as np
        llm = self.llm
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        pre = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return len(prompt) / pre, steps / (time.perf_counter() - t)


def stream_read(threads: int, gib: float = 1.0, repeats: int = 3) -> float:
    """GB/s of the best of `repeats` float32 sums over a `gib` GiB array (far beyond the caches): what this machine
    streams from DRAM with these threads, the denominator of the decode rows' 'of stream' column."""
    torch.set_num_threads(threads)
    a = torch.ones(int(gib * 2**30) // 4)
    a.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.numel() * 4 / best / 1e9


def make_runner(impl: str, shape: str, threads: int, context: int):
    kind, _, variant = impl.partition("-")
    variant, _, activations = variant.partition("+")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(variant)
    if kind == "optimized":
        return EngineRunner(shape, threads, context, dtype, activations or None)
    if kind == "transformers":
        return TransformersRunner(shape, threads, context, dtype)
    if kind == "llamacpp":
        return LlamaCppRunner(shape, threads, context, variant)
    return ReferenceRunner(shape, threads, context)


def serve(conn, impl: str, shape: str, threads: int, context: int):
    """A worker process: load `impl` once, then answer ("run", prompt, steps) with (prefill, decode) tok/s."""
    torch.set_num_threads(threads)
    try:
        runner = make_runner(impl, shape, threads, context)
        conn.send(("ready", runner.info()))
    except Exception as e:  # noqa: BLE001 - reported as the row's note (llama-cpp-python missing, no converter...)
        conn.send(("skip", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
        return
    while (msg := conn.recv())[0] == "run":
        conn.send(runner.run(msg[1], msg[2]))


class Worker:
    def __init__(self, impl, shape, threads, context):
        ctx = multiprocessing.get_context("spawn")
        self.impl, (self.conn, child) = impl, ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, impl, shape, threads, context), daemon=True)
        self.proc.start()
        status, self.info = self.conn.recv()
        self.skip = self.info if status == "skip" else None

    def run(self, prompt, steps):
        self.conn.send(("run", prompt, steps))
        return self.conn.recv()

    def close(self):
        if self.skip is None:
            self.conn.send(("stop",))
        self.proc.join()


def _stream_worker(conn, threads):
    conn.send(stream_read(threads))


def stream_in_process(threads: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_stream_worker, args=(child, threads))
    p.start()
    gbs = parent.recv()
    p.join()
    return gbs


def weight_bytes_per_token(c: Config, impl: str) -> float | None:
    """Weight bytes one batch-1 decode step must read (the DRAM floor's numerator): the k routed experts, the
    attention and router projections, the unembedding (the embedding: one row, left out). The engine and
    llama.cpp read the experts packed (MXFP4: 16 bytes + 1 scale byte per 32 weights); the engine reads its dense
    matrices in bf16 in both dtypes (a float32 model keeps the file's bf16 on CPU: checkpoint.placed_dtype);
    llama.cpp in its GGUF's type (Q8_0: 32 int8 + a 2-byte scale per 32); transformers dequantizes the experts
    at load and reads everything in its dtype. The reference decodes MXFP4 in float64 each step: left out."""
    kind, _, variant = impl.partition("-")
    variant = variant.partition("+")[0]
    if kind == "reference":
        return None
    dense_el = {"fp32": 4, "f32": 4, "bf16": 2, "q8_0": 34 / 32}[variant]
    expert_el = dense_el if kind == "transformers" else 17 / 32
    expert = 3 * c.intermediate_size * c.hidden_size  # mlp1 (2I x C) + mlp2 (C x I) weights
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim * c.hidden_size
    out = c.hidden_size * c.num_attention_heads * c.head_dim
    router = c.num_experts * c.hidden_size
    dense = c.num_hidden_layers * (qkv + out + router) + c.vocab_size * c.hidden_size
    return c.num_hidden_layers * c.experts_per_token * expert * expert_el + dense * (2 if kind == "optimized" else
                                                                                    dense_el)


def cpu_line() -> str:
    """The CPU's model and the vector features that decide the kernels (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    have = [f for f in CPU_FLAGS if f in flags]
    lack = [f for f in CPU_FLAGS if f not in flags]
    return (f"CPU: {fields.get('model name', '?')}, {os.cpu_count()} logical CPUs; has {' '.join(have) or '-'}; "
            f"lacks {' '.join(lack) or '-'}")


def commit() -> str:
    """The checkout's short commit (marked + when the tree has changes), for the printed header."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=Path(__file__).parent, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    ap.add_argument("--threads", type=int, default=2)  # every implementation's threads (torch's, OpenMP, llama.cpp)
    ap.add_argument("--prompt", default="128,512", help="prompt lengths, comma-separated; decode follows the first")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--impls", help=f"comma-separated, of {','.join(IMPLS)}")
    ap.add_argument("--serial", action="store_true", help="one implementation at a time (default for --shape 20b)")
    args = ap.parse_args()
    c, prompts = SHAPES[args.shape], [int(p) for p in args.prompt.split(",")]
    impls = args.impls.split(",") if args.impls else DEFAULT_IMPLS[args.shape]
    assert all(i in IMPLS for i in impls), f"--impls: each of {IMPLS}"
    serial = args.serial or args.shape == "20b"
    context = max(prompts) + args.new + 8
    # a prompt of distinct-looking ids; token 0 onward is valid in every vocabulary here
    prompt_of = {p: [(i * 7919) % c.vocab_size for i in range(p)] for p in prompts}
    results = {i: {"prefill": {p: [] for p in prompts}, "decode": []} for i in impls}
    infos, streams = {}, []

    def one_round(w):
        for j, p in enumerate(prompts):
            pre, dec = w.run(prompt_of[p], args.new if j == 0 else 1)
            results[w.impl]["prefill"][p].append(pre)
            if j == 0:
                results[w.impl]["decode"].append(dec)

    if serial:
        for impl in impls:
            streams.append(stream_in_process(args.threads))
            w = Worker(impl, args.shape, args.threads, context)
            infos[impl] = w.info
            if w.skip is None:
                for _ in range(args.rounds):
                    one_round(w)
            w.close()
    else:
        workers = [Worker(i, args.shape, args.threads, context) for i in impls]  # all loaded, then measured
        infos = {w.impl: w.info for w in workers}
        for _ in range(args.rounds):
            for w in workers:
                if w.skip is None:
                    one_round(w)
            streams.append(stream_in_process(args.threads))
        for w in workers:
            w.close()
    report(args, c, impls, prompts, results, infos, streams, serial)


def report(args, c, impls, prompts, results, infos, streams, serial):
    med = statistics.median
    bw = med(streams)
    print(f"\n{cpu_line()}")
    for impl in impls:
        if isinstance(infos[impl], dict) and "system_info" in infos[impl]:
            print(f"llama.cpp system info: {infos[impl]['system_info'].strip()}")
            break
    print(f"config ({args.shape}): {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_experts} experts "
          f"(top-{c.experts_per_token}), vocab {c.vocab_size}; batch 1; prompts {args.prompt} tokens, decode "
          f"{args.new} steps after the first; {args.rounds} rounds{'' if serial else ' interleaved'}, "
          f"median [best]; {args.threads} threads for everyone; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}")
    print(f"stream read ({args.threads} threads, 1 GiB float32 sum): median {bw:.1f} GB/s, best "
          f"{max(streams):.1f} over {len(streams)} runs\n")
    base = "llamacpp-bf16" if results.get("llamacpp-bf16", {}).get("decode") else None
    cols = " | ".join(f"prefill {p} tok/s" for p in prompts)
    vs = " | prefill / decode vs llama.cpp bf16" if base else ""
    print(f"| implementation | kernels | weight MB / token | {cols} | decode tok/s | decode GB/s | of stream{vs} |")
    print("|---|---|---:|" + "---:|" * len(prompts) + "---:|---:|---:|" + ("---:|" if base else ""))
    for impl in impls:
        info, r = infos[impl], results[impl]
        if not r["decode"]:
            print(f"| {impl} | skipped: {info} |")
            continue
        nbytes = weight_bytes_per_token(c, impl)
        pre = " | ".join(f"{med(r['prefill'][p]):.1f} [{max(r['prefill'][p]):.1f}]" for p in prompts)
        dec = med(r["decode"])
        mem = "- | - | -" if nbytes is None else f"{nbytes / 1e6:.1f} | {nbytes * dec / 1e9:.1f} | " \
                                                  f"{nbytes * dec / 1e9 / bw:.0%}"
        mb, gbs, share = mem.split(" | ")
        ratio = ""
        if base:
            b = results[base]
            ratio = " | " + " / ".join(f"{med(r['prefill'][p]) / med(b['prefill'][p]):.2f}x" for p in prompts) + \
                    f" / {dec / med(b['decode']):.2f}x"
        print(f"| {impl} | {info['kernels']} | {mb} | {pre} | {dec:.2f} [{max(r['decode']):.2f}] | {gbs} | "
              f"{share}{ratio} |")


if __name__ == "__main__":
    main()
