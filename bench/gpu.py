"""GPU benchmark (not a test): the engine and its kernels against the speed of light of the card they run on.

    PYTHONPATH=. python bench/gpu.py                        # 20b and 120b, every row, on the CUDA device
    PYTHONPATH=. python bench/gpu.py --models 20b --json out.json --backends triton,torch
    PYTHONPATH=. python bench/gpu.py --smoke                # CPU, tiny config, Triton interpreter: works, not fast

Weights are synthetic (optimized.synthetic: random MXFP4 experts, random bf16 rest) with the REAL gpt-oss-20b /
120b shapes, made directly in device memory: no disk, no download. Everything is timed with CUDA events after
warm-up (perf_counter on CPU). First the card itself: device-to-device copy bandwidth (bytes read + written)
and the bf16 matmul rate. Then each row has a floor, the time the bytes it must move take at the measured
copy bandwidth (decode, kernels) or the FLOPs it must do at the measured matmul rate (prefill), and the
fraction of that floor reached (floor time / measured time; 1.0 = speed of light):
  - moe: the Triton MoE kernels alone on real shapes, 8 layers' experts in turn (more than the L2 cache),
    replayed from a CUDA graph; bytes = the routed experts' packed weights, scales and biases.
  - attention decode: one query token per row at 1k / 8k context; bytes = the K/V (+ positions) it reads.
  - attention prefill: the op alone on one causal prompt of 1k / 8k / 32k tokens, a full layer and a windowed one;
    FLOPs = 4 x heads x head_dim x the visible (query, key) pairs, at the measured matmul rate.
  - linear sweep (--linear-sweep): the decode projections at batch 1 (qkv, out, router, unembedding, with the
    RMSNorm / residual add the engine fuses into them), each tile of LINEAR_SWEEP against the torch steps, and
    qkv with RoPE + cache write in one kernel or two; bytes = the weight matrix and bias.
  - engine decode: time per step at batch 1, 8, 64 and context 1k / 8k with a filled cache (positions set,
    no prefill run); bytes = every weight read once per step as released (embedding: the B rows only), the
    distinct experts the batch routes to (expected value under uniform routing), and the visible K/V; at
    batch 1 without K/V this is the anchor's 3.708 GB (20b) / 5.003 GB (120b).
  - engine prefill: tokens/s for one 2k / 8k prompt; FLOPs = 2 x active parameters x tokens + attention, less the
    last layer's work for all but the last token (its keys and values excepted: prefill_flops).
  - engine kernels: what the first decode row's step is made of (torch.profiler on one eager step): kernels a
    step and a layer, their summed device time and that over the graphed step's time (below 1: the GPU idles
    between kernels), the kernels that take most of it, and a layer's kernels in launch order with their mean
    times (which of a layer's ~30 us at batch 1 each kernel takes).
  - attention sweep (--attn-sweep): the attention prefill rows' op with each ATTN_SWEEP tile (kernels/attention.py).
  - peak GPU memory of each engine run.
Anchors printed beside (not measured here): the HBM floor 3.708 GB/token (20b) and 5.003 GB/token (120b) at
batch 1, and the best published single-GPU batch-1 decode on Hopper, SGLang 304.6 tok/s (20b), 211.5 (120b).
Comparison engines: the engine's own torch backend (--backends), and with --hf HF transformers'
GptOssForCausalLM built from the same config with random weights, experts dense (20b: 43 GB in bf16; 120b
does not fit on one card and is reported as skipped); HF's decode row: batch 1 at the first --contexts.
"""
import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from optimized.interpreter import interpret_on_cpu  # noqa: E402
from reference.config import GPT_OSS_20B, GPT_OSS_120B, Config  # noqa: E402

ANCHORS = {"20b": dict(floor_gb_per_token=3.708, sglang_tok_s=304.6),
           "120b": dict(floor_gb_per_token=5.003, sglang_tok_s=211.5)}
SMOKE = Config(num_hidden_layers=2, num_experts=4, experts_per_token=2, vocab_size=97, hidden_size=64,
               intermediate_size=64, swiglu_limit=7.0, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
               sliding_window=8, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
               rope_ntk_alpha=1.0, rope_ntk_beta=32.0)
EXPERT_KEYS = ("mlp1_weight.blocks", "mlp1_weight.scales", "mlp1_bias", "mlp2_weight.blocks", "mlp2_weight.scales",
               "mlp2_bias")


# ----------------------------------------------------------------------------------------------- timing
class Clock:
    def __init__(self, device, smoke: bool = False):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.smoke = smoke  # CPU smoke (the Triton interpreter): each timed call once, no warm-up; it checks that the
        # harness runs, and repeating an interpreted call only repeats the same work (CI time, no coverage)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, fn, warmup: int, iters: int) -> float:
        """Seconds per call of fn, after warm-up calls."""
        if self.smoke:
            warmup, iters = 0, 1
        for _ in range(warmup):
            fn()
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / iters
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t) / iters


def graphed(fn, clock):
    """fn captured once in a CUDA graph (launch overhead out of the measurement); fn itself on CPU."""
    if not clock.cuda:
        return fn
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


# ----------------------------------------------------------------------------------------------- the card
def copy_bandwidth(clock, nbytes, iters):
    src = torch.empty(nbytes, dtype=torch.uint8, device=clock.device).fill_(1)
    dst = torch.empty_like(src)
    s = clock.time(lambda: dst.copy_(src), 2, iters)
    return 2 * nbytes / s  # bytes read + written per second


def matmul_rate(clock, n, iters):
    dt = torch.bfloat16 if clock.cuda else torch.float32
    a = torch.randn(n, n, device=clock.device, dtype=dt)
    b = torch.randn(n, n, device=clock.device, dtype=dt)
    s = clock.time(lambda: a @ b, 2, iters)
    return 2 * n ** 3 / s


# ----------------------------------------------------------------------------------------------- bytes and FLOPs
def expert_bytes(config, dtype_size=2):
    C, I = config.hidden_size, config.intermediate_size
    return 2 * I * (C // 32) * 17 + 2 * I * dtype_size + C * (I // 32) * 17 + C * dtype_size


def distinct_experts(config, batch):
    """Expected number of distinct experts a batch of tokens routes to, one layer, uniform routing."""
    E, A = config.num_experts, config.experts_per_token
    return E * (1 - (1 - A / E) ** batch)


def kv_bytes(config, ctx, batch, dtype_size=2):
    """K, V and positions one decode step reads: full layers see ctx keys, windowed ones the window."""
    per_slot = 2 * config.num_key_value_heads * config.head_dim * dtype_size + 8
    slots = sum(ctx if config.window_of_layer(n) is None else min(ctx, config.sliding_window)
                for n in range(config.num_hidden_layers))
    return batch * slots * per_slot


def decode_bytes(config, batch, ctx):
    """Bytes one decode step must move: every weight once as released (bf16; float32 norms and sinks), of the
    embedding only the B rows, the distinct experts the batch routes to (MXFP4), and the visible K/V."""
    from reference.checkpoint import expected_tensors
    dense = 0
    for n, (shape, kind) in expected_tensors(config).items():
        if not n.endswith(EXPERT_KEYS) and n != "embedding.weight":
            dense += math.prod(shape) * (4 if n.endswith(("norm.scale", "sinks")) else 2)
    experts = config.num_hidden_layers * distinct_experts(config, batch) * expert_bytes(config)
    return dense + batch * config.hidden_size * 2 + experts + kv_bytes(config, ctx, batch)


def prefill_flops(config, T):
    """FLOPs one prompt of T tokens needs for its last token's logits: in every layer the qkv projection of all T
    tokens (their keys and values go into the cache); attention, out projection, router and routed experts for all
    T tokens in every layer but the last, which needs them for the last token alone (model.py runs it so); the
    unembedding of that token."""
    C, I, H, D, L = (config.hidden_size, config.intermediate_size, config.num_attention_heads, config.head_dim,
                     config.num_hidden_layers)
    qkv = C * config.qkv_dim
    rest = H * D * C + C * config.num_experts + config.experts_per_token * 3 * I * C
    flops = 2 * (qkv * L * T + rest * ((L - 1) * T + 1)) + 2 * C * config.vocab_size
    for n in range(L):
        W = config.window_of_layer(n) or 0
        seen = causal_pairs(T, W) if n < L - 1 else min(W or T, T)  # visible (query, key) pairs
        flops += 4 * H * D * seen  # QK^T and PV
    return flops


# ----------------------------------------------------------------------------------------------- measurements
class Report:
    def __init__(self, path, header):
        self.path, self.rows, self.header = path, [], header

    def add(self, **row):
        self.rows.append(row)
        print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if not isinstance(v, dict)), flush=True)
        self.save()

    def failed(self, e: BaseException, note: str = "", **row):
        """A row for a measurement that raised e: no time, the exception in the note (then `note`), the rest as
        given (model, what, backend, setting; bytes and floor_ms default to 0 and NaN)."""
        row = dict(dict(bytes=0, floor_ms=float("nan")), **row)
        self.add(**{k: row[k] for k in ("model", "what", "backend", "setting")}, ms=float("nan"), bytes=row["bytes"],
                 floor_ms=row["floor_ms"], fraction=float("nan"),
                 note=f"FAILED {type(e).__name__}: {str(e)[:200]}{note}")

    def save(self):
        if self.path:
            with open(self.path, "w") as f:
                json.dump({"header": self.header, "rows": self.rows}, f, indent=1)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# MoE paths and tile configurations bench_moe --moe-sweep times at batch 1, each path's default first (the very
# first is what the engine runs at batch 1; rows are saved as they come, so a stage cut short keeps those):
# "gemv" (optimized/kernels/tuning.py GEMV_CONFIG: one token a tile, fp32 FMAs), "dot_scaled" and "dot" (DECODE_CONFIG's
# tensor-core kernels with MX_DOT on and off). bench/sass_roofline.py prints each one's static issue bound.
MOE_SWEEP = [dict(path="gemv", BLOCK_N_UP=16, BLOCK_N_DOWN=8, BLOCK_K=512, num_warps=4, num_stages=2),
             dict(path="dot_scaled", BLOCK_N_UP=32, BLOCK_N_DOWN=32, BLOCK_K=128, num_warps=4, num_stages=3),
             dict(path="dot", BLOCK_N_UP=32, BLOCK_N_DOWN=32, BLOCK_K=128, num_warps=4, num_stages=3),
             dict(path="gemv", BLOCK_N_UP=16, BLOCK_N_DOWN=16, BLOCK_K=512, num_warps=4, num_stages=2),  # down: 180
             dict(path="gemv", BLOCK_N_UP=32, BLOCK_N_DOWN=8, BLOCK_K=256, num_warps=4, num_stages=3),
             dict(path="gemv", BLOCK_N_UP=8, BLOCK_N_DOWN=8, BLOCK_K=512, num_warps=2, num_stages=2),
             dict(path="dot_scaled", BLOCK_N_UP=32, BLOCK_N_DOWN=32, BLOCK_K=256, num_warps=4, num_stages=3),
             dict(path="dot_scaled", BLOCK_N_UP=64, BLOCK_N_DOWN=64, BLOCK_K=128, num_warps=8, num_stages=3),
             dict(path="dot", BLOCK_N_UP=16, BLOCK_N_DOWN=16, BLOCK_K=256, num_warps=4, num_stages=3),
             dict(path="dot", BLOCK_N_UP=32, BLOCK_N_DOWN=32, BLOCK_K=64, num_warps=4, num_stages=4)]


def sweep_config(entry):
    """The knobs of optimized/kernels/tuning.py (GEMV_MAX_TOKENS, GEMV_CONFIG, DECODE_CONFIG) that make
    optimized.kernels.moe run one MOE_SWEEP entry at batch 1 (gemv_pays holds there whatever GEMV_PAIRS_PER_EXPERT
    is)."""
    from optimized.kernels import tuning
    tiles = {k: v for k, v in entry.items() if k != "path"}
    if entry["path"] == "gemv":
        return dict(GEMV_MAX_TOKENS=1, GEMV_CONFIG=tiles, DECODE_CONFIG=tuning.DECODE_CONFIG)
    return dict(GEMV_MAX_TOKENS=0, GEMV_CONFIG=tuning.GEMV_CONFIG,
                DECODE_CONFIG=dict(tuning.DECODE_CONFIG, MX_DOT=entry["path"] == "dot_scaled", **tiles))


def bench_moe(report, name, config, clock, bw, layers, iters, sweep=False):
    from optimized.kernels import moe as kernels_moe
    from optimized.kernels import tuning
    from optimized.kernels.route import route
    dev, dt = clock.device, (torch.bfloat16 if clock.cuda else torch.float32)
    E, C, I = config.num_experts, config.hidden_size, config.intermediate_size
    g = torch.Generator(device=dev).manual_seed(0)
    ws = []
    for _ in range(layers):  # several layers' experts in turn, so that L2 does not hold them
        ws.append((torch.randint(0, 256, (E, 2 * I, C // 32, 16), device=dev, dtype=torch.uint8, generator=g),
                   torch.full((E, 2 * I, C // 32), 120, device=dev, dtype=torch.uint8),
                   torch.randn(E, 2 * I, device=dev, generator=g).to(dt),
                   torch.randint(0, 256, (E, C, I // 32, 16), device=dev, dtype=torch.uint8, generator=g),
                   torch.full((E, C, I // 32), 120, device=dev, dtype=torch.uint8),
                   torch.randn(E, C, device=dev, generator=g).to(dt)))

    def measure(batch, what, note=""):
        x = torch.randn(batch, C, device=dev, generator=g).to(dt)
        ids, w = route(torch.randn(batch, E, device=dev, generator=g), config.experts_per_token)
        n_experts = len(torch.unique(ids))

        def step():
            for lw in ws:
                kernels_moe(x, ids, w, *lw, config.swiglu_limit)

        s = clock.time(graphed(step, clock), 2, iters) / layers
        nbytes = n_experts * expert_bytes(config)
        report.add(model=name, what=what, backend="triton", setting=f"batch {batch}", ms=s * 1e3, bytes=nbytes,
                   floor_ms=nbytes / bw * 1e3, fraction=nbytes / bw / s,
                   note=f"{n_experts} experts, {layers} layers in turn" + note)

    if sweep:
        for cfg in MOE_SWEEP if clock.cuda else MOE_SWEEP[:2]:
            note = "; " + " ".join(f"{k}={v}" for k, v in cfg.items())
            with tuning.override(**sweep_config(cfg)):
                try:
                    measure(1, "moe sweep (graph)", note)
                except Exception as e:  # a configuration that does not compile or run: say so, go on
                    report.failed(e, note, model=name, what="moe sweep (graph)", backend="triton",
                                  setting="batch 1")
    else:
        for batch in (1, 8, 64) if clock.cuda else (1, 3):
            measure(batch, "moe kernels (graph)")
    del ws


# Decode projections bench_linear --linear-sweep times at batch 1 (the unembedding also at 4 rows, whose weights
# the kernel still reads once): kernels/linear.py's kernel at each LINEAR_SWEEP tile (the first is LINEAR_CONFIG,
# what the engine runs), then the torch steps it replaces (the RMSNorm kernel, cuBLAS, the residual add), and for
# qkv rope_cache.py's qkv_rope_cache_write against linear then rope_cache_write. bench/sass_roofline.py --kernels
# linear prints the first tile's static issue bound.
LINEAR_SWEEP = [dict(BLOCK_O=8, BLOCK_C=512, num_warps=4, num_stages=3),
                dict(BLOCK_O=16, BLOCK_C=256, num_warps=4, num_stages=3),
                dict(BLOCK_O=32, BLOCK_C=128, num_warps=4, num_stages=3),
                dict(BLOCK_O=4, BLOCK_C=1024, num_warps=4, num_stages=3)]


def bench_linear(report, name, config, clock, bw, layers, iters):
    from optimized.kernels import tuning
    from optimized.kernels.linear import linear
    from optimized.kernels.rms_norm import rms_norm
    from optimized.kernels.rope_cache import qkv_rope_cache_write, rope_cache_write
    dev, dt = clock.device, (torch.bfloat16 if clock.cuda else torch.float32)
    C, H, K, D = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
    g = torch.Generator(device=dev).manual_seed(0)
    scale = 1 + 0.1 * torch.randn(C, device=dev, generator=g)
    x4 = torch.randn(4, C, device=dev, generator=g).to(dt)  # LINEAR_MAX_ROWS rows: the weights read once still
    x, o = x4[:1], torch.randn(1, H * D, device=dev, generator=g).to(dt)
    # (name, input, rows, fused: "norm" before / "res" after, copies timed in turn: more than L2 holds)
    projections = [("qkv", x, config.qkv_dim, "norm", layers), ("out", o, C, "res", layers),
                   ("router", x, config.num_experts, "norm", layers), ("unembedding", x, config.vocab_size, "norm", 1),
                   ("unembedding", x4, config.vocab_size, "norm", 1)]
    for pname, xin, rows, fused, copies in projections:
        N, cin = xin.shape
        ws = [(torch.randn(rows, cin, device=dev, generator=g) * cin ** -0.5).to(dt) for _ in range(copies)]
        bs = [None if pname == "unembedding" else torch.randn(rows, device=dev, generator=g).to(dt) for _ in ws]
        res = torch.randn(N, rows, device=dev, generator=g).to(dt) if fused == "res" else None
        norm = scale if fused == "norm" else None
        nbytes = (rows * cin + (0 if bs[0] is None else rows)) * ws[0].element_size()

        def timed(note, step):
            try:
                s = clock.time(graphed(step, clock), 2, iters) / copies
                report.add(model=name, what="linear sweep (graph)", backend="triton", setting=f"{pname} batch {N}",
                           ms=s * 1e3, bytes=nbytes, floor_ms=nbytes / bw * 1e3, fraction=nbytes / bw / s,
                           note=f"{rows}x{cin}, {copies} in turn; {note}")
            except Exception as e:  # a configuration that does not compile or run: say so, go on
                report.failed(e, f"; {note}", model=name, what="linear sweep (graph)", backend="triton",
                              setting=f"{pname} batch {N}", bytes=nbytes, floor_ms=nbytes / bw * 1e3)

        for cfg in LINEAR_SWEEP if clock.cuda else LINEAR_SWEEP[:1]:
            with tuning.override(LINEAR_CONFIG=dict(cfg)):  # captured (compiled) inside: the graph keeps this tile
                timed("kernel " + " ".join(f"{k}={v}" for k, v in cfg.items()),
                      lambda: [linear(xin, w, b, residual=res, norm_scale=norm) for w, b in zip(ws, bs)])

        def steps():
            for w, b in zip(ws, bs):
                y = torch.nn.functional.linear(xin if norm is None else rms_norm(xin, norm), w, b)
                if res is not None:
                    y = res + y

        timed("torch steps (RMSNorm kernel, cuBLAS, residual add)", steps)
        if pname == "qkv" and N == 1:  # qkv with RoPE and the cache write in its epilogue, and as two kernels
            S, F = min(config.sliding_window, 128), D // 2
            kc = torch.zeros(1, S, K, D, device=dev, dtype=dt)
            vc, pc = torch.zeros_like(kc), torch.full((1, S), -1, device=dev, dtype=torch.int64)
            cos, sin = torch.rand(1, 1, F, device=dev), torch.rand(1, 1, F, device=dev)
            pos, x3 = torch.full((1, 1), 5, device=dev, dtype=torch.int64), xin[:, None]
            timed("qkv_rope_cache_write (qkv + RoPE + cache write, one kernel)",
                  lambda: [qkv_rope_cache_write(x3, w, b, norm, cos, sin, pos, kc, vc, pc, H, K, D)
                           for w, b in zip(ws, bs)])
            timed("linear, then rope_cache_write (two kernels)",
                  lambda: [rope_cache_write(linear(x3, w, b, norm_scale=norm), cos, sin, pos, kc, vc, pc, H, K, D)
                           for w, b in zip(ws, bs)])
        del ws, bs


def bench_attention(report, name, config, clock, bw, contexts, iters, backends):
    from optimized.ops import get_backend
    dev, dt = clock.device, (torch.bfloat16 if clock.cuda else torch.float32)
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    for batch in (1, 64) if clock.cuda else (1, 2):
        for ctx in contexts:
            q = torch.randn(batch, 1, H, D, device=dev, dtype=dt)
            k = torch.randn(batch, ctx, K, D, device=dev, dtype=dt)
            v = torch.randn_like(k)
            sinks = torch.randn(H, device=dev)
            k_pos = torch.arange(ctx, device=dev).repeat(batch, 1)
            q_pos = torch.full((batch, 1), ctx - 1, device=dev)
            nbytes = batch * ctx * (2 * K * D * k.element_size() + 8)
            for be in dict.fromkeys(b.partition("-")[0] for b in backends):  # variants share the attention op
                op = get_backend(be).attention
                s = clock.time(lambda: op(q, k, v, sinks, D ** -0.5, 0, q_pos, k_pos), 2, iters)
                report.add(model=name, what="attention decode", backend=be, setting=f"batch {batch}, ctx {ctx}",
                           ms=s * 1e3, bytes=nbytes, floor_ms=nbytes / bw * 1e3, fraction=nbytes / bw / s, note="")
            del q, k, v


def causal_pairs(T: int, window: int) -> int:
    """(query, key) pairs a causal prompt of T tokens attends: every earlier key and itself, or its last `window`."""
    if not window or window >= T:
        return T * (T + 1) // 2
    return window * (window + 1) // 2 + (T - window) * window


_ATTN_PREFILL_SEEN = set()  # attention shapes already measured in this run (20b and 120b share theirs)


def causal_prompt(config, clock, T):
    """q (1, T, H, D), k, v (1, T, K, D), sinks (H,), positions 0..T-1 (1, T): one prompt's attention inputs."""
    dev, dt = clock.device, (torch.bfloat16 if clock.cuda else torch.float32)
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q = torch.randn(1, T, H, D, device=dev, dtype=dt)
    k, v = (torch.randn(1, T, K, D, device=dev, dtype=dt) for _ in range(2))
    return q, k, v, torch.randn(H, device=dev), torch.arange(T, device=dev)[None]


def prompt_setting(T, window):
    return f"{T} tokens, " + (f"window {window}" if window else "full layer")


def bench_attention_prefill(report, name, config, clock, rate, tokens, iters, backends):
    """The attention op alone on one causal prompt of T tokens (batch 1, q at positions 0..T-1 over the same T keys):
    a full layer and a windowed one. FLOPs = 4 x H x D x the visible (query, key) pairs (QK^T and PV, a multiply-add
    each), at the measured bf16 matmul rate. The torch op only up to 8k tokens (past that it runs for seconds)."""
    from optimized.ops import get_backend
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    shape = (H, K, D, config.sliding_window)
    if shape in _ATTN_PREFILL_SEEN:
        return
    _ATTN_PREFILL_SEEN.add(shape)
    for T in tokens:
        q, k, v, sinks, pos = causal_prompt(config, clock, T)
        for window in (0, config.sliding_window):
            flops = 4 * H * D * causal_pairs(T, window)
            for be in dict.fromkeys(b.partition("-")[0] for b in backends):
                if be == "torch" and T > 8192:
                    continue
                op = get_backend(be).attention
                s = clock.time(lambda: op(q, k, v, sinks, D ** -0.5, window, pos, pos), 1, max(2, iters // 4))
                report.add(model=name, what="attention prefill", backend=be, setting=prompt_setting(T, window),
                           ms=s * 1e3, bytes=0, floor_ms=flops / rate * 1e3, fraction=flops / rate / s,
                           note=f"{flops / s / 1e12:.1f} TFLOP/s")
        del q, k, v


# bench_attention_sweep's prefill tiles (kernels/tuning.py PREFILL_TILE): the engine's first (None), then the tile
# it had before 2026-12-06 (64 rows on 8 warps: both warpgroups computed the whole score tile), 64 rows on one
# warpgroup, 128 rows x 64 keys, and 128 keys on windowed layers too. bench/sass_roofline.py --configs sweep counts
# the same tiles.
ATTN_SWEEP = [None,
              dict(BLOCK_M=64, BLOCK_N=64, BLOCK_N_WINDOW=64, num_warps=8),
              dict(BLOCK_M=64, BLOCK_N=64, BLOCK_N_WINDOW=64, num_warps=4),
              dict(BLOCK_M=128, BLOCK_N=64, BLOCK_N_WINDOW=64, num_warps=8),
              dict(BLOCK_M=128, BLOCK_N=128, BLOCK_N_WINDOW=128, num_warps=8)]


@contextlib.contextmanager
def attention_tile(tile):
    """optimized/kernels/tuning.py's PREFILL_TILE (the attention's) set to tile meanwhile (None: as it is)."""
    from optimized.kernels import tuning
    with tuning.override(PREFILL_TILE=tile or tuning.PREFILL_TILE):
        yield tuning.PREFILL_TILE


def bench_attention_sweep(report, name, config, clock, rate, tokens, iters):
    """The Triton attention on one causal prompt of `tokens` tokens (a full layer and a windowed one) with each
    ATTN_SWEEP prefill tile: the A/B for attention.tiles (chosen by SASS counts: bench/sass_roofline.py). Floors as
    bench_attention_prefill's. On CPU (fp32) every entry runs fp32's own tile: the sweep only runs."""
    from optimized.kernels.attention import attention, tiles
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q, k, v, sinks, pos = causal_prompt(config, clock, tokens)
    for tile in ATTN_SWEEP:
        with attention_tile(tile):
            for window in (0, config.sliding_window):
                BM, BN, warps = tiles(tokens, H // K, q.dtype, window)
                flops = 4 * H * D * causal_pairs(tokens, window)
                try:
                    s = clock.time(lambda: attention(q, k, v, sinks, D ** -0.5, window, pos, pos), 1,
                                   max(2, iters // 4))
                    note = f"{flops / s / 1e12:.1f} TFLOP/s; tile {BM} x {BN}, {warps} warps"
                except Exception as e:  # a tile that fails to compile or run: its row says so, the others still run
                    s, note = float("nan"), f"FAILED {type(e).__name__}: {e}; tile {BM} x {BN}, {warps} warps"
                report.add(model=name, what="attention sweep", backend="triton",
                           setting=prompt_setting(tokens, window), ms=s * 1e3, bytes=0, floor_ms=flops / rate * 1e3,
                           fraction=flops / rate / s, note=note)
    del q, k, v


def fill_cache(cache, ctx):
    """Positions of a cache that holds ctx tokens per row (full layers: slot = pos; rings: the latest)."""
    for p in cache.pos:
        S = p.shape[1]
        slots = torch.arange(S, device=p.device)
        held = ctx - 1 - ((ctx - 1 - slots) % S) if S < ctx else torch.where(slots < ctx, slots, -1)
        p.copy_(held.expand_as(p))
    cache.lengths = [ctx] * cache.batch


def peak_note(clock) -> str:
    return f", peak {torch.cuda.max_memory_allocated(clock.device) / 2**30:.1f} GiB" if clock.cuda else ""


def profile_decode(model, cache, batch, clock):
    """The kernels one decode step launches: one eager step (the same kernels a graph replays) under
    torch.profiler. Returns [(name, device seconds)] in launch order. On CPU (smoke) there are no device kernels:
    the step's top-level CPU ops stand in for them, so the harness is exercised."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    tok = torch.ones(batch, 1, dtype=torch.int64, device=clock.device)
    pos = torch.tensor(cache.lengths, dtype=torch.int64, device=clock.device)[:, None]
    step = lambda: model.forward(tok, pos, cache, decode=True, static=True)  # noqa: E731  (writes slot pos again)
    step()
    clock.sync()
    with profile(activities=[ProfilerActivity.CUDA if clock.cuda else ProfilerActivity.CPU]) as prof:
        step()
        clock.sync()
    if clock.cuda:
        events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    else:
        events = [e for e in prof.events() if e.device_type == DeviceType.CPU and e.cpu_parent is None]
    events.sort(key=lambda e: e.time_range.start)
    return [(e.name, e.time_range.elapsed_us() / 1e6) for e in events]


def layer_pattern(names, layers):
    """(offset, period) such that names[offset:offset + layers * period] is one layer's kernel sequence repeated
    `layers` times: the longest period that fits (a run of one repeated kernel is no layer), then the first offset;
    None if there is none."""
    n = len(names)
    for period in range(n // layers, 0, -1):
        for offset in range(n - layers * period + 1):
            span = names[offset:offset + layers * period]
            if all(span[i] == span[i + period] for i in range(len(span) - period)):
                return offset, period
    return None


def kernels_row(report, name, config, backend, setting, kernels, step_s):
    """What a decode step is made of: kernels (launches), their summed device time, and that over the graphed
    step's time (1 = the GPU never idles between kernels; the rest is launch gaps and ramp-up); then a layer's
    kernels in launch order, each with its mean time over the layers (a kernel name used twice in a layer, e.g.
    the linear kernel's, is told apart by its place), and the time of the kernels outside the layers."""
    busy = sum(t for _, t in kernels)
    by = {}
    for k, t in kernels:
        c, tt = by.get(k, (0, 0.0))
        by[k] = (c + 1, tt + t)
    top = sorted(by.items(), key=lambda kv: -kv[1][1])[:6]
    L = config.num_hidden_layers
    note = (f"{len(kernels)} kernels a step ({len(kernels) / L:.1f} a layer), their time {busy / step_s:.2f} "
            f"of the step; most time: " + "; ".join(f"{k[:48]} x{c} {t * 1e3:.3g} ms" for k, (c, t) in top))
    layer = []
    pattern = layer_pattern([k for k, _ in kernels], L)
    if pattern is not None:
        offset, period = pattern
        for j in range(period):
            t = sum(kernels[offset + n * period + j][1] for n in range(L)) / L
            layer.append([kernels[offset + j][0], t])
        outside = busy - L * sum(t for _, t in layer)
        note += ("; a layer: " + ", ".join(f"{k[:40]} {t * 1e6:.3g} us" for k, t in layer)
                 + f"; outside the layers {len(kernels) - L * period} kernels {outside * 1e6:.3g} us")
    report.add(model=name, what="engine kernels", backend=backend, setting=setting, ms=busy * 1e3, bytes=0,
               floor_ms=float("nan"), fraction=float("nan"), note=note,
               kernels={k: [c, t] for k, (c, t) in by.items()}, layer=layer)


# A/B variants of the Triton backend, "triton-NAME": the optional ops (ops.OPTIONAL) each switches off
VARIANTS = {
    "": (),
    # the qkv projection and RoPE + cache write as two kernels (kernels/linear.py, rope_cache.py): the A/B for
    # qkv_rope_cache_write
    "split-qkv": ("qkv_rope_cache_write",),
    # the projections as torch steps (cuBLAS, the norm and the add on their own), the router, routing and grouping
    # as their own kernels
    "cublas": ("qkv_rope_cache_write", "linear", "routed_moe"),
    # and RoPE + cache write and RMSNorm too: what all the fused kernels save
    "unfused": ("qkv_rope_cache_write", "rope_cache_write", "rms_norm", "linear", "routed_moe"),
    # every fused op on, and the decode kernels launched with programmatic dependent launch (kernels/pdl.py: off by
    # default until this A/B says it pays), the projections' weight prefetch before the wait included
    "pdl": (),
    # PDL without that prefetch: the A/B for pdl.PREFETCH
    "pdl-noprefetch": (),
}


def bench_engine(report, name, config, weights, clock, bw, flops_rate, args, backend):
    """The engine rows of one backend (a VARIANTS name after "triton-" switches fused ops off, or PDL on)."""
    pdl = importlib.import_module("optimized.kernels.pdl") if backend.startswith("triton-pdl") else None
    if pdl is not None:
        pdl.ENABLED, pdl.PREFETCH = True, backend != "triton-pdl-noprefetch"
    try:
        _bench_engine(report, name, config, weights, clock, bw, flops_rate, args, backend)
    finally:
        if pdl is not None:
            pdl.ENABLED, pdl.PREFETCH = False, True


def _bench_engine(report, name, config, weights, clock, bw, flops_rate, args, backend):
    from optimized.generate import Engine
    from optimized.model import Model
    base, _, variant = backend.partition("-")
    model = Model(weights, backend=base)
    for op in VARIANTS[variant]:  # the fused ops this variant switches off (their steps run instead)
        setattr(model.ops, op, None)
    V = config.vocab_size
    for ctx in args.contexts:
        engine = Engine(model, context=ctx + args.steps + 8, max_batch=max(args.batches))
        for batch in args.batches:
            if clock.cuda:
                torch.cuda.reset_peak_memory_stats(clock.device)
            try:
                cache = engine.fresh_cache(batch)
                fill_cache(cache, ctx)
                rows = [[(7 * b + 1) % V] for b in range(batch)]
                s = clock.time(lambda: engine.run(cache, rows), 2, args.steps)
            except Exception as e:  # out of memory, a capture that fails: note it, keep measuring the rest
                engine.release()
                report.failed(e, model=name, what="engine decode", backend=backend, setting=f"batch {batch}, ctx {ctx}")
                continue
            nbytes = decode_bytes(config, batch, ctx)
            report.add(model=name, what="engine decode", backend=backend, setting=f"batch {batch}, ctx {ctx}",
                       ms=s * 1e3, bytes=nbytes, floor_ms=nbytes / bw * 1e3, fraction=nbytes / bw / s,
                       note=f"{batch / s:.1f} tok/s" + peak_note(clock))
            if batch == args.batches[0] and ctx == args.contexts[0]:  # what the first row's step is made of
                try:
                    kernels_row(report, name, config, backend, f"batch {batch}, ctx {ctx}",
                                profile_decode(model, cache, batch, clock), s)
                except Exception as e:  # a profiler problem must not cost the remaining rows
                    report.failed(e, model=name, what="engine kernels", backend=backend,
                                  setting=f"batch {batch}, ctx {ctx}")
        engine.release()
    if not args.prefill:
        return
    from optimized.generate import PREFILL_CHUNK
    engine = Engine(model, context=max(args.prefill) + 8, max_batch=1)
    # the engine's chunk (default_prefill_tokens: grown so the MoE's tiles fill) and, where it differs, the old
    # fixed 1024 beside it: the A/B for default_prefill_tokens
    chunks = [engine.chunk_for(1)] + ([PREFILL_CHUNK] if engine.chunk_for(1) != PREFILL_CHUNK else [])
    for T in args.prefill:
        prompt = [(i * 7919) % V for i in range(T)]
        for chunk in chunks:
            if chunk != chunks[0] and chunk >= T:
                continue  # one chunk either way: the same run
            engine.prefill_chunk = chunk
            setting = f"{T} tokens" + ("" if chunk == chunks[0] else f" chunk {chunk}")
            if clock.cuda:
                torch.cuda.reset_peak_memory_stats(clock.device)
            try:
                s = clock.time(lambda: engine.run(engine.fresh_cache(1), [prompt]), 1, 1)
            except Exception as e:
                engine.release()
                report.failed(e, model=name, what="engine prefill", backend=backend, setting=setting)
                continue
            fl = prefill_flops(config, T)
            report.add(model=name, what="engine prefill", backend=backend, setting=setting, ms=s * 1e3,
                       bytes=0, floor_ms=fl / flops_rate * 1e3, fraction=fl / flops_rate / s,
                       note=f"{T / s:.0f} tok/s, chunks of {chunk}" + peak_note(clock))
    engine.release()


@torch.inference_mode()
def bench_hf(report, name, config, clock, bw, flops_rate, args):
    """HF transformers' GptOssForCausalLM with the same shapes, random weights, experts dense in bf16 (HF keeps
    them dense on GPU unless the `kernels` package is installed), where they fit in memory."""
    def skip(note):
        report.add(model=name, what="engine decode", backend="transformers", setting="-", ms=float("nan"), bytes=0,
                   floor_ms=float("nan"), fraction=float("nan"), note=note)
    try:
        from transformers import GptOssConfig, GptOssForCausalLM
    except ImportError as e:
        return skip(f"transformers not importable ({e})")
    c, L = config, config.num_hidden_layers
    dt = torch.bfloat16 if clock.cuda else torch.float32
    dense = L * c.num_experts * 3 * c.intermediate_size * c.hidden_size * 2
    if clock.cuda and dense > 0.8 * torch.cuda.mem_get_info(clock.device)[0]:
        return skip(f"dense bf16 experts ({dense / 1e9:.0f} GB) do not fit in free GPU memory")
    hf_cfg = GptOssConfig(num_hidden_layers=L, num_local_experts=c.num_experts, num_experts_per_tok=c.experts_per_token,
                          vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                          head_dim=c.head_dim, num_attention_heads=c.num_attention_heads,
                          num_key_value_heads=c.num_key_value_heads, sliding_window=c.sliding_window,
                          swiglu_limit=c.swiglu_limit,
                          layer_types=["sliding_attention" if c.window_of_layer(n) else "full_attention"
                                       for n in range(L)])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dt)  # parameters made in the compute dtype directly (no fp32 copy of 40 GB)
    try:
        with torch.device(clock.device):
            model = GptOssForCausalLM(hf_cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    V = c.vocab_size
    T = args.prefill[0]
    ids = torch.tensor([[(i * 7919) % V for i in range(T)]], device=clock.device)
    s = clock.time(lambda: model(ids, use_cache=True), 1, 1)
    fl = prefill_flops(config, T)
    report.add(model=name, what="engine prefill", backend="transformers", setting=f"{T} tokens", ms=s * 1e3, bytes=0,
               floor_ms=fl / flops_rate * 1e3, fraction=fl / flops_rate / s, note=f"{T / s:.0f} tok/s" + peak_note(clock))
    ctx = args.contexts[0]
    out = model(ids[:, :ctx] if ctx <= T else torch.zeros(1, ctx, dtype=torch.long, device=clock.device), use_cache=True)
    state = {"past": out.past_key_values, "tok": out.logits[:, -1:].argmax(-1)}

    def step():
        o = model(state["tok"], past_key_values=state["past"], use_cache=True)
        state["past"], state["tok"] = o.past_key_values, o.logits[:, -1:].argmax(-1)

    s = clock.time(step, 2, args.steps)
    nbytes = decode_bytes(config, 1, ctx)
    report.add(model=name, what="engine decode", backend="transformers", setting=f"batch 1, ctx {ctx}", ms=s * 1e3,
               bytes=nbytes, floor_ms=nbytes / bw * 1e3, fraction=nbytes / bw / s,
               note=f"{1 / s:.1f} tok/s, dense experts" + peak_note(clock))
    del model, state, out


def print_table(report):
    h = report.header
    print(f"\n## {h['device']}, {h['date']}, commit {h['commit']}, torch {h['torch']}, triton {h['triton']}")
    print(f"copy bandwidth {h['copy_GBps']:.1f} GB/s (read + write), matmul {h['matmul_TFLOPs']:.3g} TFLOP/s "
          f"(bf16 on CUDA, fp32 on CPU)")
    for m, a in ANCHORS.items():
        print(f"anchors {m}: HBM floor {a['floor_gb_per_token']} GB/token at batch 1 = "
              f"{h['copy_GBps'] / a['floor_gb_per_token']:.1f} tok/s on this card; SGLang {a['sglang_tok_s']} tok/s")
    print("\n| model | what | backend | setting | ms | floor ms | fraction of floor | note |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for r in report.rows:
        print(f"| {r['model']} | {r['what']} | {r['backend']} | {r['setting']} | {r['ms']:.4g} | {r['floor_ms']:.4g} | "
              f"{r['fraction']:.3f} | {r['note']} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny config (checks that the harness runs)")
    ap.add_argument("--models", default="20b,120b")
    ap.add_argument("--backends", default="triton,torch", help="engine backends to measure, first = main; "
                    "triton-pdl: the Triton backend with programmatic dependent launch (kernels/pdl.py), "
                    "triton-pdl-noprefetch: the same without the projections' weight prefetch before the wait; "
                    "triton-split-qkv: the Triton backend with the qkv projection and the RoPE + cache write as two "
                    "kernels; triton-cublas: with the projections as torch steps (cuBLAS, the RMSNorm "
                    "and the residual add on their own); triton-unfused: also the decode RoPE + cache write and "
                    "RMSNorm as torch steps")
    ap.add_argument("--contexts", default="1024,8192")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--prefill", default="2048,8192")
    ap.add_argument("--attn-prefill", default="1024,8192,32768", help="prompt lengths of the attention prefill rows")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: moe,attention,engine")
    ap.add_argument("--moe-sweep", action="store_true", help="time alternative MoE decode tile sizes (batch 1)")
    ap.add_argument("--linear-sweep", action="store_true", help="time the decode projections (batch 1): the linear "
                    "kernel's tiles against the torch steps, and qkv with RoPE + cache write fused or not")
    ap.add_argument("--attn-sweep", action="store_true", help="time the attention prefill tiles of ATTN_SWEEP on "
                    "the longest --attn-prefill prompt (a full layer and a windowed one)")
    ap.add_argument("--hf", action="store_true", help="also HF transformers (dense bf16 experts) where it fits")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    args.contexts, args.batches, args.prefill = ints(args.contexts), ints(args.batches), ints(args.prefill)
    args.attn_prefill = ints(args.attn_prefill)
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        base, _, variant = b.partition("-")
        if base not in ("triton", "torch") or variant not in VARIANTS or (variant and base != "triton"):
            ap.error(f"unknown backend {b!r}: torch, triton, or triton-VARIANT with VARIANT one of "
                     f"{[v for v in VARIANTS if v]}")
    skip = set(args.skip.split(","))
    if args.smoke:
        device, models = "cpu", {"smoke": SMOKE}
        args.contexts, args.batches, args.prefill, args.steps = [12, 20], [1, 2], [16], 2
        args.attn_prefill = [20]
        copy_n, mm_n, iters, moe_layers = 2**22, 128, 3, 2
    else:
        if not torch.cuda.is_available():
            sys.exit("bench/gpu.py needs a CUDA device (use --smoke on CPU)")
        device = "cuda"
        models = {m: {"20b": GPT_OSS_20B, "120b": GPT_OSS_120B}[m] for m in args.models.split(",") if m}
        copy_n, mm_n, iters, moe_layers = 2**30, 8192, 20, 8
    interpret_on_cpu(device == "cpu")  # before optimized.kernels is imported
    clock = Clock(device, smoke=args.smoke)
    commit = os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip() or "unknown"
    import triton
    name = torch.cuda.get_device_name() if clock.cuda else "CPU (smoke, Triton interpreter)"
    bw = copy_bandwidth(clock, copy_n, iters)
    rate = matmul_rate(clock, mm_n, iters)
    header = dict(device=name, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), commit=commit,
                  torch=torch.__version__, triton=triton.__version__, copy_GBps=bw / 1e9, matmul_TFLOPs=rate / 1e12,
                  anchors=ANCHORS, args=vars(args) | {"backends": backends})
    report = Report(args.json, header)
    report.save()
    print(f"{name}: copy {bw / 1e9:.1f} GB/s, matmul {rate / 1e12:.2f} TFLOP/s", flush=True)
    from optimized.synthetic import synthetic_weights
    for mname, config in models.items():
        try:
            if "moe" not in skip:
                bench_moe(report, mname, config, clock, bw, moe_layers, iters, sweep=args.moe_sweep)
            if args.linear_sweep:
                bench_linear(report, mname, config, clock, bw, moe_layers, iters)
            if args.attn_sweep:
                bench_attention_sweep(report, mname, config, clock, rate, max(args.attn_prefill), iters)
            if "attention" not in skip:
                bench_attention(report, mname, config, clock, bw, args.contexts, iters, backends)
                bench_attention_prefill(report, mname, config, clock, rate, args.attn_prefill, iters, backends)
            if "engine" not in skip:
                dt = torch.bfloat16 if clock.cuda else torch.float32
                weights = synthetic_weights(config, device=device, dtype=dt, seed=0)
                for be in backends:
                    bench_engine(report, mname, config, weights, clock, bw, rate, args, be)
                del weights
            if args.hf:
                if clock.cuda:
                    torch.cuda.empty_cache()
                bench_hf(report, mname, config, clock, bw, rate, args)
        except Exception:  # one model failing (e.g. out of memory) must not lose the other's numbers
            traceback.print_exc()
            report.add(model=mname, what="ERROR", backend="", setting="", ms=float("nan"), bytes=0,
                       floor_ms=float("nan"), fraction=float("nan"), note=traceback.format_exc().splitlines()[-1])
        if clock.cuda:
            torch.cuda.empty_cache()
    print_table(report)
    return report


if __name__ == "__main__":
    main()
