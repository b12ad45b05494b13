"""Every Triton kernel compiles for Hopper (sm_90) with the tile sizes its wrapper uses, on any machine.

The CPU tests run the kernels in the Triton interpreter, which accepts programs the compiler rejects (and
the other way round); this compiles each kernel ahead of time for a GPUTarget, through PTX to a cubin with
the ptxas bundled in the triton wheel, without a GPU. It runs in a subprocess because the kernels must be
defined with TRITON_INTERPRET=0. Skipped where triton has no NVIDIA backend.
Two kinds of compile: plain (every int an i32, no alignment: the most general program) and, for the bf16
launches the GPU runs, specialized as the JIT specializes a real launch (optimized/kernels/aot.py): pointers from torch
allocations 16-byte aligned, an int argument equal to 1 turned into a constant (T and the q_pos stride in
decode), ints divisible by 16 marked so, with the values of representative gpt-oss-20b calls.
Checked on CPU with triton 3.6.0 (the GPU image's, under torch 2.11 and 2.13) and triton 3.9.0 (the dev venv's)."""
import importlib
import os
import re
import subprocess
import sys

import pytest

# gpt-oss-20b: H=64 query heads, K=8 kv heads, D=64; a token's fused qkv row is (H + 2K) * D = 5120 wide; a cache
# of 4096 slots (128 on sliding-window layers), K * D = 512 per slot
_QKV, _SLOT = 5120, 512


def _attn_ints(T, S, window, chunk, slots):
    """The int arguments of one _attn_fwd_kernel launch by the engine: q a view of the fused qkv output, k/v
    and positions slices of a cache of `slots` slots."""
    return dict(T=T, S=S, window=window, chunk=chunk, sq_b=T * _QKV, sq_t=_QKV, sk_b=slots * _SLOT, sk_s=_SLOT,
                sv_b=slots * _SLOT, sv_s=_SLOT, sqp_b=T, skp_b=slots,
                s_bnd_b=3 * (-(-S // 64) + 1) if T > 1 else 0)  # attention.block_bounds' rows (T > 1 only)


def triton_next_pow2(n):
    return 1 << (n - 1).bit_length()


def cases():
    """(module, kernel, activation dtype, constexprs, launch options, ints): the wrappers' configurations.
    ints None: the plain compile; else the int arguments' values in a representative launch, which the
    compile is specialized on as the JIT would (`specialize`)."""
    tuning = importlib.import_module("optimized.kernels.tuning")
    moe_gemv = importlib.import_module("optimized.kernels.moe_gemv")
    attn_mod = importlib.import_module("optimized.kernels.attention")
    import torch
    TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
    out = []
    # bf16 with tl.dot_scaled (what a GPU runs) and without (the sweep's A/B), fp32 (never dot_scaled)
    for dt, mx_dot in (("bf16", True), ("bf16", False), ("fp32", False)):
        for cfg in (tuning.DECODE_CONFIG, tuning.PREFILL_CONFIG if dt == "bf16" else tuning.PREFILL_CONFIG_FP32):
            launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
            common = dict(A=4, C=2880, I=2880, IEEE=dt == "fp32", MX_DOT=mx_dot, FMT="bf16", BLOCK_M=cfg["BLOCK_M"],
                          BLOCK_K=cfg["BLOCK_K"])
            for ints in (None, {}) if dt == "bf16" else (None,):  # no int arguments: {} = aligned pointers
                out.append(("moe_mma", "_moe_up_kernel", dt, dict(common, ALPHA=1.702, BLOCK_N=cfg["BLOCK_N_UP"]),
                            launch, ints))
                out.append(("moe_mma", "_moe_down_kernel", dt, dict(common, BLOCK_N=cfg["BLOCK_N_DOWN"]), launch, ints))
        gemv = tuning.GEMV_CONFIG  # batch-1 decode: the GEMV kernels read the codes as int32 words (aot.arg_type)
        for ints in (None, {}) if dt == "bf16" else (None,):
            common = dict(A=4, C=2880, I=2880, BLOCK_K=gemv["BLOCK_K"])
            launch = dict(num_warps=gemv["num_warps"], num_stages=gemv["num_stages"])
            out.append(("moe_gemv", "_moe_up_gemv_kernel", dt,
                        dict(common, ALPHA=1.702, BLOCK_N=gemv["BLOCK_N_UP"],
                             H_DTYPE=moe_gemv.TL_DTYPES[TORCH_DTYPES[dt]]), launch, ints))
            for res in (True, False):  # the engine passes the residual; the bare op has none
                out.append(("moe_gemv", "_moe_down_gemv_kernel", dt,
                            dict(common, HAS_RES=res, BLOCK_N=gemv["BLOCK_N_DOWN"]), launch, ints))
        for split, T in ((False, 2048), (False, 7), (True, 1)):
            bm, bn, warps = attn_mod.tiles(T, 8, TORCH_DTYPES[dt], window=128)
            c = dict(H=64, K=8, D=64, G=8, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=64, HAS_WINDOW=True, SPLIT=split,
                     IEEE=dt == "fp32", BOUNDS=T > 1)
            out.append(("attention", "_attn_fwd_kernel", dt, c, dict(num_warps=warps, num_stages=2), None))
    # the engine's attention launches (attention.tiles): BLOCK_M = 16 (T <= 2), 32 (T = 3, 4), 64 (T <= 8), then
    # 128 rows x 128 keys (64 windowed); full layers (no window) and sliding ones (at prefill [ring | new]); split-KV where one
    # q block covers T and the keys are many
    attn = [(2048, False, False, _attn_ints(2048, 2048, 0, 2048, 4096)),  # prefill of 2048 tokens, a full layer
            (2048, False, True, _attn_ints(2048, 2176, 128, 2176, 2176)),  # the same, a sliding layer
            (7, False, True, _attn_ints(7, 7, 128, 64, 128)),  # prefill of 7 tokens, a sliding layer
            (1, True, False, _attn_ints(1, 1000, 0, 256, 4096)),  # decode at 1000 keys, batch 1: 4 splits
            (1, False, True, _attn_ints(1, 128, 128, 128, 128)),  # decode, a sliding layer's full ring
            (3, True, False, _attn_ints(3, 3000, 0, 256, 4096)),  # 3 tokens after 2997 cached: 12 splits
            (3, False, True, _attn_ints(3, 3, 128, 64, 128)),
            (12, True, False, _attn_ints(12, 3000, 0, 256, 4096))]  # 12 tokens: a 128-row tile, 12 splits
    for T, split, window, ints in attn:
        bm, bn, warps = attn_mod.tiles(T, 8, torch.bfloat16, ints["window"])
        c = dict(H=64, K=8, D=64, G=8, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=64, HAS_WINDOW=window, SPLIT=split,
                 IEEE=False, BOUNDS=T > 1)
        out.append(("attention", "_attn_fwd_kernel", "bf16", c, dict(num_warps=warps, num_stages=2), ints))
    group = dict(num_warps=8, debug=True)  # as its @triton.jit(debug=True): the device_assert stays
    no_x = dict(X_OUT=False, NORM=False, BLOCK_C=1024)
    out.append(("moe_group", "_group_kernel", "bf16", dict(BLOCK_M=16, BLOCK_P=256, BLOCK_E=128, BLOCK_T=32, **no_x),
                group, None))
    # batch 1 on 20b for the GEMV kernels (4 pairs, 32 experts, tiles of 1 row: 8; x's row written code-major);
    # batch 64 on 120b (256 pairs, 128 experts, 144 tiles of 16 rows)
    # (the engine hands it the block's input and the norm scale: NORM)
    out.append(("moe_group", "_group_kernel", "bf16", dict(BLOCK_M=1, BLOCK_P=4, BLOCK_E=32, BLOCK_T=8, X_OUT=True,
                                                           NORM=True, BLOCK_C=1024), group,
                dict(P=4, E=32, n_tiles=8, N_X=1, C=2880)))
    out.append(("moe_group", "_group_kernel", "bf16", dict(BLOCK_M=1, BLOCK_P=64, BLOCK_E=128, BLOCK_T=128,
                                                           X_OUT=True, NORM=False, BLOCK_C=1024), group,
                dict(P=64, E=128, n_tiles=128, N_X=16, C=2880)))
    out.append(("moe_group", "_group_kernel", "bf16", dict(BLOCK_M=16, BLOCK_P=64, BLOCK_E=32, BLOCK_T=64, **no_x),
                group, dict(P=52, E=32, n_tiles=36, N_X=0, C=0)))  # 20b, 13 tokens: the tensor-core tiles
    out.append(("moe_group", "_group_kernel", "bf16", dict(BLOCK_M=16, BLOCK_P=256, BLOCK_E=128, BLOCK_T=256, **no_x),
                group, dict(P=256, E=128, n_tiles=144, N_X=0, C=0)))
    # routed_moe's router kernel at batch 1 (20b: 32 experts, 8 tiles; 120b: 128 experts) and 16 tokens on 120b
    lin = importlib.import_module("optimized.kernels.linear")
    for E, N in ((32, 1), (128, 1), (128, 16)):
        P = 4 * N
        c = dict(C=2880, E=E, A=4, BLOCK_O=lin.block_o(E), BLOCK_C=tuning.LINEAR_CONFIG["BLOCK_C"], BLOCK_E=E,
                 BLOCK_A=4, BLOCK_P=P, BLOCK_T=triton_next_pow2(P + min(E, P)))
        out.append(("moe_group", "_moe_router_kernel", "bf16", c, dict(num_warps=4),
                    dict(N=N, n_tiles=P + min(E, P))))
    for ints in (None, dict(C=2880)):
        for res in (True, False):
            out.append(("moe_mma", "_sum_kernel", "bf16", dict(A=4, HAS_RES=res, BLOCK_C=1024), dict(num_warps=4),
                        ints))
    out.append(("mxfp4", "_dequant_kernel", "bf16", dict(ROW_BYTES=1440, BLOCK_R=16, BLOCK_B=64), {}, None))
    # the attention prologue (RoPE + cache write), gpt-oss-20b heads: decode (a sliding layer's ring, a full layer)
    # and a 2k prefill (a full layer; a ring with the new keys handed back)
    for new in (False, True):
        rope = dict(H=64, K=8, D=64, F=32, NEW=new, BLOCK_J=16, BLOCK_F=32)
        for dt in ("bf16", "fp32"):
            out.append(("rope_cache", "_rope_cache_kernel", dt, rope, dict(num_warps=2), None))
    for S, T, new in ((128, 1, False), (4096, 1, False), (4096, 2048, False), (128, 2048, True)):
        rope = dict(H=64, K=8, D=64, F=32, NEW=new, BLOCK_J=16, BLOCK_F=32)
        ints = dict(S=S, T=T, s_qkv_b=5120 * T, s_qkv_t=5120, s_kc_b=S * 512, s_kc_s=512, s_vc_b=S * 512,
                    s_vc_s=512, s_pc_b=S, s_kn_b=(S + T) * 512 if new else 0, s_kn_t=512 if new else 0)
        out.append(("rope_cache", "_rope_cache_kernel", "bf16", rope, dict(num_warps=2), ints))
    # the qkv projection with the norm, RoPE and the cache write (rope_cache.py's qkv_rope_cache_write), 20b heads
    lin = importlib.import_module("optimized.kernels.linear")
    qkv = dict(C=2880, H=64, K=8, D=64, F=32, P=4, HAS_BIAS=True, NORM=True, BLOCK_C=tuning.LINEAR_CONFIG["BLOCK_C"])
    launch = dict(num_warps=tuning.LINEAR_CONFIG["num_warps"], num_stages=tuning.LINEAR_CONFIG["num_stages"])
    for dt in ("bf16", "fp32"):
        out.append(("rope_cache", "_qkv_rope_cache_kernel", dt, qkv, launch, None))
    for S in (128, 4096):
        for N in (1, 4):  # batch 1, and LINEAR_MAX_ROWS rows
            ints = dict(N=N, S=S, s_kc_b=S * 512, s_kc_s=512, s_vc_b=S * 512, s_vc_s=512, s_pc_b=S)
            out.append(("rope_cache", "_qkv_rope_cache_kernel", "bf16", qkv, launch, ints))
    # the decode projections (kernels/linear.py) at batch 1: qkv with the norm, out with the residual, the router
    for C, O, norm, res in ((2880, 5120, True, False), (4096, 2880, False, True), (2880, 32, True, False),
                            (2880, 201088, True, False)):
        c = dict(C=C, O=O, HAS_BIAS=O != 201088, HAS_RES=res, NORM=norm, BLOCK_O=lin.block_o(O),
                 BLOCK_C=tuning.LINEAR_CONFIG["BLOCK_C"])
        launch = dict(num_warps=tuning.LINEAR_CONFIG["num_warps"], num_stages=tuning.LINEAR_CONFIG["num_stages"])
        for N in (1, 4):  # batch 1, and LINEAR_MAX_ROWS rows
            out.append(("linear", "_linear_kernel", "bf16", c, launch, dict(N=N)))
    out.append(("linear", "_linear_kernel", "fp32", dict(C=2880, O=5120, HAS_BIAS=True, HAS_RES=True, NORM=True,
                                                         BLOCK_O=8, BLOCK_C=512), dict(num_warps=4), None))
    for dt in ("bf16", "fp32"):  # RMSNorm over gpt-oss's 2880 features
        out.append(("rms_norm", "_rms_norm_kernel", dt, dict(BLOCK_C=4096), dict(num_warps=4), None))
    out.append(("rms_norm", "_rms_norm_kernel", "bf16", dict(BLOCK_C=4096), dict(num_warps=4), dict(C=2880)))
    out.append(("route", "_route_kernel", "bf16", dict(A=4, BLOCK_E=128, BLOCK_A=4), {}, None))
    out.append(("route", "_route_kernel", "bf16", dict(A=4, BLOCK_E=32, BLOCK_A=4), {}, dict(E=32, stride_row=32)))
    # programmatic dependent launch on (kernels/pdl.py): each decode-step kernel's first specialized bf16 case again,
    # and with the weight prefetch (PDL=2) for those that have one
    for case in [c for c in out if c[1] in PDL_KERNELS and c[2] == "bf16" and c[5] is not None]:
        for level in (1, 2) if case[1] in PREFETCH_KERNELS else (1,):
            if not any(c[1] == case[1] and c[3].get("PDL") == level for c in out):
                out.append(case[:3] + (dict(case[3], PDL=level),) + case[4:])
    return out


# H100 / H200: cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 KiB (the 228 KiB an SM less 1 KiB the driver keeps)
HOPPER_MAX_SHARED = 227 * 1024

PDL_KERNELS = ("_qkv_rope_cache_kernel", "_attn_fwd_kernel", "_linear_kernel", "_moe_router_kernel",
               "_moe_up_gemv_kernel", "_moe_down_gemv_kernel")
PREFETCH_KERNELS = ("_qkv_rope_cache_kernel", "_linear_kernel", "_moe_router_kernel")  # read-only weights (pdl.py)


def compile_all():
    from optimized.kernels.aot import compile_kernel
    for mod, name, dt, consts, launch, ints in cases():
        fn = getattr(importlib.import_module(f"optimized.kernels.{mod}"), name)
        compiled = compile_kernel(fn, name, dt, consts, launch, ints)
        # the GEMV kernels' FP4 decode makes fp32 subnormals (0.5 * 2**-126): flushing them to zero would drop
        # every 0.5 weight, so no flush-to-zero fp32 arithmetic may appear
        if "_gemv_" in name and re.search(r"\.ftz\.f32", compiled.asm["ptx"]):
            raise AssertionError(f"{name}: flush-to-zero fp32 ops in the PTX")
        # PDL: the grid dependency control instructions exactly where asked for (none in a kernel without it)
        ptx = compiled.asm["ptx"]
        gdc = [op in ptx for op in ("griddepcontrol.launch_dependents", "griddepcontrol.wait")]
        if gdc != [bool(consts.get("PDL"))] * 2:
            raise AssertionError(f"{name} PDL={consts.get('PDL')}: griddepcontrol in the PTX {gdc}")
        # PDL=2: the weight prefetch, all of it before the wait (and none in any other launch)
        pf = [m.start() for m in re.finditer(r"prefetch\.global\.L2", ptx)]
        if bool(pf) != (consts.get("PDL") == 2) or (pf and max(pf) > ptx.index("griddepcontrol.wait")):
            raise AssertionError(f"{name} PDL={consts.get('PDL')}: {len(pf)} L2 prefetches, not all before the wait")
        # triton refuses a launch whose shared memory exceeds the card's opt-in maximum a block (OutOfResources):
        # on a lent GPU that would cost the whole device check's stage, so it is checked here, without one
        if compiled.metadata.shared > HOPPER_MAX_SHARED:
            raise AssertionError(f"{name} {consts} {launch}: {compiled.metadata.shared} bytes of shared memory, "
                                 f"over Hopper's {HOPPER_MAX_SHARED} a block")
        how = "plain" if ints is None else f"specialized {ints}"
        print(f"compiled {mod}.{name} {dt} {consts} {how}", flush=True)


def test_kernels_compile_for_sm90():
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no NVIDIA backend")
    env = dict(os.environ, TRITON_INTERPRET="0")  # "0", not unset: optimized.kernels defaults it to 1 without CUDA
    env["TRITON_DEFAULT_FP_FUSION"] = env.get("TRITON_DEFAULT_FP_FUSION", "1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("compiled ") == len(cases()), proc.stdout


if __name__ == "__main__":
    compile_all()
