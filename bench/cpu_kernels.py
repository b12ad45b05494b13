"""CPU benchmark (not a test): the engine's C kernels of a decode step, one at a time, on the matrices of the mid
and gpt-oss-20b shapes, with the weights cold (enough copies cycled that none is in cache) and hot (one copy):
GB/s of weight bytes read, against a streaming read with the same threads.

    python bench/cpu_kernels.py [--threads 1] [--runs 60] [--simd avx2]

Rows: `mxfp4_cpu.routed_matvec` (4 routed experts of a decode step, packed MXFP4) with float32 activations and with
int8 (Q8_0, `int8=True`); `linear.bf16_f32_matmul` at one row (the dense projections: qkv, out, unembedding). A
second table: `mxfp4_cpu.moe_prefill`, one layer's MoE of 32 and 256 tokens, float32 and int8 (hot weights).
Printed: the best and the median of --runs calls, and the kernel each ran (`kernel_name`). Results: BENCHMARKS.md
"CPU against llama.cpp (issue 22)".
"""
import argparse
import time

import torch

from engine_cpu import SHAPES, cpu_line, stream_read  # bench/, the script's own folder
from optimized import linear, mxfp4_cpu

COLD_BYTES = 256 * 2**20  # copies enough to stream this many bytes before one comes round again (beyond any cache)


def timed(f, runs: int) -> tuple[float, float]:
    f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def experts_case(C: int, I: int, hot: bool, int8: bool, runs: int, simd: bool | str = True):
    """4 routed experts' mlp1 (2I x C) on one token: what a decode step reads per layer for mlp1."""
    B, per_expert = C // 32, 2 * I * C // 32 * 17
    E = 1 if hot else max(4, COLD_BYTES // per_expert)
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (E, 2 * I, B, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(118, 130, (E, 2 * I, B), dtype=torch.uint8, generator=g)
    x = torch.randn(4, C, generator=g)
    step = [0]

    def call():
        ids = torch.tensor([(step[0] * 4 + i) % E for i in range(4)])
        step[0] += 1
        mxfp4_cpu.routed_matvec(blocks, scales, ids, x, int8=int8, simd=simd)
    return 4 * per_expert, timed(call, runs)


def prefill_case(c, T: int, int8: bool, runs: int, simd: bool | str = True):
    """One layer's MoE of T tokens (moe_prefill: each hit expert's tiles decoded once, used by all its rows), the
    shape's experts, random routing: multiply-adds of its matmuls and the best / median seconds."""
    E, A, C, I = c.num_experts, c.experts_per_token, c.hidden_size, c.intermediate_size
    g = torch.Generator().manual_seed(0)
    w1b = torch.randint(0, 256, (E, 2 * I, C // 32, 16), dtype=torch.uint8, generator=g)
    w1s = torch.randint(118, 124, (E, 2 * I, C // 32), dtype=torch.uint8, generator=g)
    w2b = torch.randint(0, 256, (E, C, I // 32, 16), dtype=torch.uint8, generator=g)
    w2s = torch.randint(118, 124, (E, C, I // 32), dtype=torch.uint8, generator=g)
    b1, b2, x = torch.randn(E, 2 * I, generator=g), torch.randn(E, C, generator=g), torch.randn(T, C, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:A] for _ in range(T)]).int()
    weights = torch.full((T, A), 1.0 / A)
    return T * A * 3 * C * I, timed(lambda: mxfp4_cpu.moe_prefill(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2,
                                                                 c.swiglu_limit, 1.702, int8=int8, simd=simd), runs)


def dense_case(O: int, C: int, hot: bool, runs: int):
    copies = 1 if hot else max(1, COLD_BYTES // (O * C * 2))  # a matrix beyond COLD_BYTES is cold by itself
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(O, C, generator=g).bfloat16() for _ in range(copies)]
    x = torch.randn(1, C, generator=g)
    step = [0]

    def call():
        linear.bf16_f32_matmul(ws[step[0] % copies], x)
        step[0] += 1
    return O * C * 2, timed(call, runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--simd", choices=mxfp4_cpu.SIMD, help="cap the MXFP4 kernels' vector level (default: the best)")
    args = ap.parse_args()
    simd = args.simd or True
    torch.set_num_threads(args.threads)
    print(cpu_line())
    print(f"kernels: dense {linear.kernel_name('bf16_f32_matmul')}, experts {mxfp4_cpu.kernel_name(simd)} and "
          f"{mxfp4_cpu.kernel_name(simd, int8=True)}; "
          f"{args.threads} threads; torch {torch.__version__}")
    print(f"stream read ({args.threads} threads, 1 GiB float32 sum): {stream_read(args.threads):.1f} GB/s\n")
    print("| kernel | shape | cold GB/s best / median | hot GB/s best / median |")
    print("|---|---|---:|---:|")
    for name, c in SHAPES.items():
        rows = [(f"routed_matvec {act}", f"{name}: 4 x ({2 * c.intermediate_size} x {c.hidden_size}) MXFP4",
                 lambda hot, int8=(act == "int8"): experts_case(c.hidden_size, c.intermediate_size, hot, int8,
                                                                args.runs, simd))
                for act in ("float32", "int8")]
        qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
        rows += [("bf16_f32_matmul", f"{name}: {O} x {C} bf16",
                  lambda hot, O=O, C=C: dense_case(O, C, hot, max(3, min(args.runs, 2**32 // (O * C * 2)))))
                 for O, C in ((qkv, c.hidden_size), (c.vocab_size, c.hidden_size))]
        for kernel, shape, case in rows:
            cells = []
            for hot in (False, True):
                nbytes, (best, med) = case(hot)
                cells.append(f"{nbytes / best / 1e9:.1f} / {nbytes / med / 1e9:.1f}")
            print(f"| {kernel} | {shape} | {cells[0]} | {cells[1]} |", flush=True)
    print("\n| moe_prefill | shape | tokens | ms best / median | GMAC/s (best) |")
    print("|---|---|---:|---:|---:|")
    for name, c in SHAPES.items():
        for T in (32, 256):
            for act in ("float32", "int8"):
                macs, (best, med) = prefill_case(c, T, act == "int8", max(3, args.runs // 10), simd)
                print(f"| {act} | {name}: one layer, {c.num_experts} experts top-{c.experts_per_token} | {T} | "
                      f"{best * 1e3:.0f} / {med * 1e3:.0f} | {macs / best / 1e9:.1f} |", flush=True)


if __name__ == "__main__":
    main()
