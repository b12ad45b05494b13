"""Static roofline of the decode kernels on Hopper: instructions issued per byte they must read, from the SASS.

    PYTHONPATH=. python bench/sass_roofline.py                 # the engine's configs and bench/gpu.py's sweep
    PYTHONPATH=. python bench/sass_roofline.py --configs engine --json out.json

No GPU needed: each kernel is compiled for sm_90 on this machine (optimized/kernels/aot.py, specialized as a
real launch on gpt-oss-20b's expert shapes, bf16 activations) and its main loop (the longest backward branch of
the SASS) is counted, for each path the MoE has at batch 1: "gemv" (what the engine runs: one token a tile,
fp32 FMAs), "dot_scaled" and "dot" (the tensor-core kernels, with and without tl.dot_scaled), and the prefill
tiles. One loop iteration of a program reads BLOCK_N rows x BLOCK_K/2 code bytes (+ a scale byte per 32 values)
of each of its matrices (2 for the up-projection: gate and linear rows, 1 for the down). The attention row is
the split-KV decode kernel (issue 7): an iteration reads BLOCK_N keys' K and V rows and positions; its rows
count the loop over blocks every query sees whole (the steady state), not the masked one.

The bound it prints: a Hopper SM issues at most 4 warp-instructions per cycle (one per scheduler), so a kernel
that issues r warp-instructions per byte cannot stream more than 4 * SMs * clock / r bytes/s, whatever the
memory does. `ceiling` is that over the card's HBM bandwidth (capped at 1), times the balance of the batch-1
grid over the SMs (4 routed experts x cdiv(rows, BLOCK_N) programs; an SM with one program more than another
issues for longer). For the prefill rows it is the MMA FLOPs an iteration allows at that issue rate over the
dense bf16 tensor-core rate, for a 2048-token prompt's tiles. An upper bound on the fraction of the floor the
kernel can reach, not a measurement: it ignores latency, dual issue limits and the slower pipes (conversions run
at 16 lanes a cycle).
bench/gpu.py measures. Card figures are the spec sheets' (boost clock, HBM bandwidth), printed with the table.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile

import torch

os.environ["TRITON_INTERPRET"] = "0"  # before optimized.kernels: the kernels must be compilable, not interpreted
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from reference.moe import SWIGLU_ALPHA  # noqa: E402

# spec sheets: SMs, boost clock (GHz), HBM bandwidth (TB/s), dense bf16 tensor-core rate (TFLOP/s)
CARDS = {"H100 SXM": (132, 1.98, 3.35, 989.4), "H200": (132, 1.98, 4.8, 989.4)}
PREFILL_TOKENS = 2048  # the prefill rows: tiles of a 2048-token prompt on gpt-oss-20b (32 experts)
ISSUE_PER_SM_CYCLE = 4  # warp-instructions: four schedulers, one each per cycle
MUFU_PER_SM_CYCLE = 0.5  # warp-instructions of the special-function unit (ex2, rcp, ...): 16 lanes a cycle
C20, I20, EXPERTS_PER_TOKEN = 2880, 2880, 4  # gpt-oss-20b and 120b share these


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(ROOT, "bench", "gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_configs():
    """bench/gpu.py's MOE_SWEEP (what a GPU session times), read from that file."""
    return _bench_gpu().MOE_SWEEP


def attention_sweep_tiles():
    """bench/gpu.py's ATTN_SWEEP without the engine's own tile (None there: counted by --configs prefill)."""
    return [t for t in _bench_gpu().ATTN_SWEEP if t is not None]


def count(kernel, cfg, work_dir):
    """Compile one MoE kernel with a decode config and count its main loop. Returns a row dict."""
    from optimized.kernels import aot
    tuning = importlib.import_module("optimized.kernels.tuning")
    up, gemv = kernel == "up", cfg["path"] == "gemv"
    name = f"_moe_{kernel}{'_gemv' if gemv else ''}_kernel"
    kernels = importlib.import_module(f"optimized.kernels.{'moe_gemv' if gemv else 'moe_mma'}")
    bn = cfg["BLOCK_N_UP" if up else "BLOCK_N_DOWN"]
    bk = cfg["BLOCK_K"]
    consts = dict(A=EXPERTS_PER_TOKEN, C=C20, I=I20, BLOCK_N=bn, BLOCK_K=bk)
    prefill = cfg.get("regime") == "prefill"
    bm = cfg.get("BLOCK_M") or (tuning.PREFILL_CONFIG if prefill else tuning.DECODE_CONFIG)["BLOCK_M"]
    if not gemv:
        consts.update(IEEE=False, MX_DOT=cfg["path"] == "dot_scaled", FMT="bf16", BLOCK_M=bm)
    if up:
        consts["ALPHA"] = SWIGLU_ALPHA
    if up and gemv:
        consts["H_DTYPE"] = kernels.TL_DTYPES[torch.bfloat16]
    if gemv and not up:
        consts["HAS_RES"] = True  # as the engine calls it
    launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    compiled = aot.compile_kernel(getattr(kernels, name), name, "bf16", consts, launch, ints={})
    # matrices an iteration reads: gate and linear rows (up); the down GEMV reads its token's A experts
    matrices = 2 if up else EXPERTS_PER_TOKEN if gemv else 1
    nbytes = matrices * bn * (bk // 2 + bk // 32)  # codes + E8M0 scales read per iteration
    # batch-1 programs: a pair's tiles (the down GEMV: one token's, all A experts in each)
    tiles = (math.ceil(PREFILL_TOKENS * EXPERTS_PER_TOKEN / bm) + 32 if prefill
             else 1 if gemv and not up else EXPERTS_PER_TOKEN)
    programs = tiles * math.ceil((I20 if up else C20) / bn)
    flops = 2 * bm * bn * bk * matrices if prefill else 0  # per iteration, a full tile of tokens
    return row(kernel, cfg, compiled, nbytes, programs, work_dir, flops)


def row(kernel, cfg, compiled, nbytes, programs, work_dir, flops=0, full_blocks=False, masked=False):
    """The table row of a compiled kernel whose main loop reads nbytes an iteration, launched as `programs`.
    flops > 0 (prefill): the ceiling is over the tensor-core rate instead, flops being one iteration's MMA work.
    full_blocks (attention): count the smallest loop that holds an MMA, the steady state's loop over blocks every
    query sees whole (the masked loop runs for the blocks on the diagonal, the window's edge, empty slots);
    masked: the largest such loop, the masked one, instead (its row's path gets " masked")."""
    from optimized.kernels import aot
    code = aot.sass(compiled.asm["cubin"], work_dir)
    if full_blocks or masked:
        mma = [body for body in aot.loops(code) if any(aot.opcode(i) in ("HMMA", "HGMMA") for i in body)]
        loop = (max if masked else min)(mma, key=len, default=[])
        if masked:
            cfg = dict(cfg, path=cfg["path"] + " masked")
    else:
        loop = aot.main_loop(code)
    if not loop:
        raise RuntimeError(f"{kernel}: no loop found in the SASS")
    res = aot.resources(compiled.asm["cubin"], work_dir)
    ops = {}
    for ins in loop:
        op = aot.opcode(ins)
        ops[op] = ops.get(op, 0) + 1
    per_byte = len(loop) * cfg["num_warps"] / nbytes
    out = dict(kernel=kernel, config=cfg, loop=len(loop), warps=cfg["num_warps"], bytes=nbytes, per_byte=per_byte,
               programs=programs, ops=ops, top=sorted(ops.items(), key=lambda kv: -kv[1])[:6], ceiling={},
               regs=res.get("REG"), spill=res.get("LOCAL", 0) + res.get("STACK", 0),
               smem=compiled.metadata.shared)  # bytes; over 227 KiB a Hopper launch fails (test_kernels_compile)
    for card, (sms, ghz, tbs, tflops) in CARDS.items():
        balance = (programs / sms) / math.ceil(programs / sms)
        issue = ISSUE_PER_SM_CYCLE * sms * ghz * 1e9  # warp-instructions a second
        if flops:  # FLOP/s the issue rate allows, over the tensor-core rate
            rate = issue * flops / (len(loop) * cfg["num_warps"])
            if ops.get("MUFU"):  # exp2 and friends: 16 lanes a cycle an SM, i.e. half a warp-instruction
                rate = min(rate, MUFU_PER_SM_CYCLE * sms * ghz * 1e9 * flops / (ops["MUFU"] * cfg["num_warps"]))
            out["ceiling"][card] = min(1.0, rate * balance / (tflops * 1e12))
        else:  # bytes/s the issue rate allows, over HBM
            out["ceiling"][card] = min(1.0, issue / per_byte * balance / (tbs * 1e12))
        out["balance"] = balance
    return out


def count_attention(work_dir, keys=8192):
    """The split-KV decode attention (optimized/kernels/attention.py) at batch 1 on gpt-oss's heads (64 query,
    8 kv, head_dim 64), a full layer of `keys` keys: each loop iteration reads BLOCK_N keys' K and V rows (bf16) and
    their int64 positions. The engine's launch (attention.tiles): 8 warps, 2 stages, splits of 256 keys
    (MIN_SPLIT_KEYS)."""
    from optimized.kernels import aot
    attn = importlib.import_module("optimized.kernels.attention")
    H, K, D, G = 64, 8, 64, 8
    BM, BN, warps = attn.tiles(1, G, torch.bfloat16)  # the engine's decode tile
    chunk = attn.MIN_SPLIT_KEYS
    consts = dict(H=H, K=K, D=D, G=G, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=D, HAS_WINDOW=False, SPLIT=True, IEEE=False,
                  BOUNDS=False)  # one query token: no block bounds (attention.py)
    slots, qkv, slot = keys, (H + 2 * K) * D, K * D  # q a view of the fused qkv row, k/v/positions of the cache
    ints = dict(T=1, S=keys, window=0, chunk=chunk, sq_b=qkv, sq_t=qkv, sk_b=slots * slot, sk_s=slot,
                sv_b=slots * slot, sv_s=slot, sqp_b=1, skp_b=slots, s_bnd_b=0)
    compiled = aot.compile_kernel(attn._attn_fwd_kernel, "_attn_fwd_kernel", "bf16", consts,
                                  dict(num_warps=warps, num_stages=2), ints=ints)
    return compiled, dict(path=f"decode {keys // 1024}k", BLOCK_N=BN, D=D, num_warps=warps, num_stages=2), \
        BN * (4 * D + 8), K * -(-keys // chunk)


def count_attention_prefill(work_dir, tokens=2048, window=0, tile=None):
    """The flash-attention prefill kernel on a `tokens` prompt (gpt-oss's heads; window 0: a full layer, else a
    sliding one attending [ring | new]): each iteration is two MMAs over BLOCK_M (token, head) rows x BLOCK_N keys x
    head_dim, and an exp2 per score. Its ceiling is over the bf16 tensor-core rate, bounded by the issue rate and by
    the special-function unit's exp2 rate. tile: a PREFILL_TILE to count instead of the engine's."""
    from optimized.kernels import aot
    attn = importlib.import_module("optimized.kernels.attention")
    H, K, D, G = 64, 8, 64, 8
    with _bench_gpu().attention_tile(tile):  # the engine's bf16 prefill tile, or the sweep's
        BM, BN, warps = attn.tiles(tokens, G, torch.bfloat16, window)
    S = tokens + (window if window else 0)
    slots, qkv, slot = (S if window else 4096), (H + 2 * K) * D, K * D
    consts = dict(H=H, K=K, D=D, G=G, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=D, HAS_WINDOW=window > 0, SPLIT=False,
                  IEEE=False, BOUNDS=True)  # several query tokens: the blocks' position bounds (attention.py)
    ints = dict(T=tokens, S=S, window=window, chunk=S, sq_b=tokens * qkv, sq_t=qkv, sk_b=slots * slot,
                s_bnd_b=3 * (-(-S // BN) + 1),  # attention.block_bounds' rows
                sk_s=slot, sv_b=slots * slot, sv_s=slot, sqp_b=tokens, skp_b=slots)
    compiled = aot.compile_kernel(attn._attn_fwd_kernel, "_attn_fwd_kernel", "bf16", consts,
                                  dict(num_warps=warps, num_stages=2), ints=ints)
    label = f"prefill {tokens // 1024}k" + (" window" if window else "") + (f" {BM}x{BN}w{warps}" if tile else "")
    cfg = dict(path=label, BLOCK_M=BM, BLOCK_N=BN, D=D, num_warps=warps, num_stages=2)
    return compiled, cfg, BN * (4 * D + 8), K * -(-tokens // (BM // G)), 4 * BM * BN * D


def count_linear(work_dir):
    """The decode projections (optimized/kernels/linear.py) at batch 1 on gpt-oss-20b: qkv (2880 -> 5120, with the
    RMSNorm prologue) and out (4096 -> 2880, with the residual add). An iteration reads BLOCK_O bf16 weight rows x
    BLOCK_C features; one program per block of rows."""
    from optimized.kernels import aot
    lin = importlib.import_module("optimized.kernels.linear")
    tuning = importlib.import_module("optimized.kernels.tuning")
    out = []
    for name, C, O, norm, res in (("qkv", 2880, 5120, True, False), ("out", 4096, 2880, False, True)):
        bo, bc = lin.block_o(O), tuning.LINEAR_CONFIG["BLOCK_C"]
        consts = dict(C=C, O=O, HAS_BIAS=True, HAS_RES=res, NORM=norm, BLOCK_O=bo, BLOCK_C=bc)
        launch = dict(num_warps=tuning.LINEAR_CONFIG["num_warps"], num_stages=tuning.LINEAR_CONFIG["num_stages"])
        compiled = aot.compile_kernel(lin._linear_kernel, "_linear_kernel", "bf16", consts, launch, ints=dict(N=1))
        cfg = dict(path=f"{name} {C}->{O}", BLOCK_N=bo, BLOCK_K=bc, **launch)
        out.append((compiled, cfg, bo * bc * 2, -(-O // bo)))
    # qkv with RoPE and the cache write in its epilogue (rope_cache.py's qkv_rope_cache_write): the same loop over
    # 2P interleaved rows (P RoPE pairs of a head) a program
    rc = importlib.import_module("optimized.kernels.rope_cache")
    H, K, D, S = 64, 8, 64, 4096
    P, bc = rc._pairs_a_program(D // 2), tuning.LINEAR_CONFIG["BLOCK_C"]
    consts = dict(C=2880, H=H, K=K, D=D, F=D // 2, P=P, HAS_BIAS=True, NORM=True, BLOCK_C=bc)
    launch = dict(num_warps=tuning.LINEAR_CONFIG["num_warps"], num_stages=tuning.LINEAR_CONFIG["num_stages"])
    ints = dict(N=1, S=S, s_kc_b=S * K * D, s_kc_s=K * D, s_vc_b=S * K * D, s_vc_s=K * D, s_pc_b=S)
    compiled = aot.compile_kernel(rc._qkv_rope_cache_kernel, "_qkv_rope_cache_kernel", "bf16", consts, launch, ints)
    cfg = dict(path="qkv+rope 2880->5120", BLOCK_N=2 * P, BLOCK_K=bc, **launch)
    out.append((compiled, cfg, 2 * P * bc * 2, (H + 2 * K) * D // (2 * P)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="engine,sweep,prefill",
                    help="engine (optimized.kernels.moe's batch-1 paths, kernels/tuning.py's GEMV_CONFIG, DECODE_CONFIG with and without "
                    "tl.dot_scaled), sweep (bench/gpu.py's MOE_SWEEP), prefill (PREFILL_CONFIG; ceiling over the "
                    "bf16 tensor-core rate)")
    ap.add_argument("--kernels", default="up,down,attention,linear", help="MoE up / down projection; attention: "
                    "the split-KV decode kernel at 8k keys (BN = keys a step, BK = head_dim); linear: the decode "
                    "projections qkv and out, and qkv with RoPE and the cache write (BN = weight rows a program, BK = features "
                    "a step)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        sys.exit("sass_roofline: this triton has no NVIDIA backend (it compiles for sm_90 with the wheel's ptxas)")
    import triton
    tuning = importlib.import_module("optimized.kernels.tuning")
    configs = []
    parts = args.configs.split(",")
    tiles = ("BLOCK_N_UP", "BLOCK_N_DOWN", "BLOCK_K", "num_warps", "num_stages")
    if "engine" in parts:  # what optimized.kernels.moe runs at batch 1, then its tensor-core paths
        configs.append(dict(path="gemv", **{k: tuning.GEMV_CONFIG[k] for k in tiles}))
        configs += [dict(path=p, **{k: tuning.DECODE_CONFIG[k] for k in tiles}) for p in ("dot_scaled", "dot")]
    if "sweep" in parts:
        configs += sweep_configs()
    if "prefill" in parts:  # the tensor-core kernels at prefill tiles: the ceiling is over the bf16 MMA rate
        configs += [dict(path=p, regime="prefill", **{k: tuning.PREFILL_CONFIG[k] for k in tiles})
                    for p in ("dot_scaled", "dot")]
    seen, unique = set(), []
    for c in configs:
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for cfg in unique:
            for kernel in args.kernels.split(","):
                if kernel in ("up", "down"):
                    rows.append(count(kernel, cfg, work))
        if "attention" in args.kernels.split(","):
            compiled, cfg, nbytes, programs = count_attention(work)
            rows.append(row("attn", cfg, compiled, nbytes, programs, work, full_blocks=True))
            # a full layer's prompt and a sliding one's, each unmasked and masked loop: the engine's tile (prefill),
            # bench/gpu.py's ATTN_SWEEP tiles (sweep)
            tiles = ([None] if "prefill" in parts else []) + (attention_sweep_tiles() if "sweep" in parts else [])
            for tile in tiles:
                for window in (0, 128):
                    compiled, cfg, nbytes, programs, flops = count_attention_prefill(work, window=window, tile=tile)
                    for masked in (False, True):
                        rows.append(row("attn", cfg, compiled, nbytes, programs, work, flops, full_blocks=True,
                                        masked=masked))
        if "linear" in args.kernels.split(","):
            for compiled, cfg, nbytes, programs in count_linear(work):
                rows.append(row("linear", cfg, compiled, nbytes, programs, work))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# decode kernels, sm_90 SASS (triton {triton.__version__}, commit {commit}); bf16, gpt-oss-20b shapes, "
          f"batch 1 (attention: a full layer at 8k keys)")
    print("# cards (spec): " + ", ".join(f"{k} {s} SMs {g} GHz {t} TB/s {f} bf16 TFLOP/s"
                                         for k, (s, g, t, f) in CARDS.items())
          + f"; at most {ISSUE_PER_SM_CYCLE} warp-instructions per SM per cycle")
    cards = list(CARDS)
    print(f"{'kernel':6s} {'path':34s} {'BN':>3s} {'BK':>4s} {'warps':>5s} {'stages':>6s} {'loop':>5s} "
          f"{'regs':>4s} {'spill':>5s} {'smem':>6s} {'bytes/it':>8s} {'instr/B':>7s} {'progs':>5s} {'balance':>7s} "
          + " ".join(f"{'ceil ' + c:>13s}" for c in cards) + "  most issued in the loop")
    for r in rows:
        c = r["config"]
        bn = c["BLOCK_N_UP"] if r["kernel"] == "up" else c.get("BLOCK_N_DOWN", c.get("BLOCK_N"))
        label = c["path"] + (" prefill" if c.get("regime") == "prefill" else "")
        print(f"{r['kernel']:6s} {label:34s} {bn:3d} {c.get('BLOCK_K', c.get('D')):4d} {c['num_warps']:5d} "
              f"{c['num_stages']:6d} "
              f"{r['loop']:5d} {r['regs']:4d} {r['spill']:5d} {r['smem']:6d} {r['bytes']:8d} {r['per_byte']:7.3f} "
              f"{r['programs']:5d} "
              f"{r['balance']:7.2f} " + " ".join(f"{r['ceiling'][k]:13.2f}" for k in cards)
              + "  " + " ".join(f"{op} {n}" for op, n in r["top"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(triton=triton.__version__, commit=commit, cards=CARDS, rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
