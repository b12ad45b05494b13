"""Every Triton kernel compiles for Hopper (sm_90) with the tile sizes its wrapper uses, on any machine.

The CPU tests run the kernels in the Triton interpreter, which accepts programs the compiler rejects (and
the other way round); this compiles each kernel ahead of time for a GPUTarget, through PTX to a cubin with
the ptxas bundled in the triton wheel, without a GPU. It runs in a subprocess because the kernels must be
defined with TRITON_INTERPRET=0. Skipped where triton has no NVIDIA backend."""
import importlib
import os
import subprocess
import sys

import pytest

# pointer element types and scalar types by argument name; constexpr arguments come from each case
TYPES = {"ids_ptr": "*i32", "order_ptr": "*i32", "pair_ptr": "*i32", "tile_expert_ptr": "*i32",
         "tile_start_ptr": "*i32", "tile_stop_ptr": "*i32", "w_ptr": "*u8", "s_ptr": "*u8", "weights_ptr": "*fp32", "y_ptr": "*fp32",
         "sinks_ptr": "*fp32", "qpos_ptr": "*i64", "kpos_ptr": "*i64", "pm_ptr": "*fp32", "pl_ptr": "*fp32",
         "pacc_ptr": "*fp32", "limit": "fp32", "qk_scale": "fp32"}
ACT = ("x_ptr", "b_ptr", "h_ptr", "q_ptr", "k_ptr", "v_ptr", "o_ptr", "out_ptr", "logits_ptr")  # activation dtype


def cases():
    """(module, kernel, activation dtype, constexprs, launch options): the wrappers' configurations."""
    moe = importlib.import_module("optimized.kernels.moe")
    out = []
    for dt in ("bf16", "fp32"):
        for cfg in (moe.DECODE_CONFIG, moe.PREFILL_CONFIG):
            launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
            common = dict(A=4, C=2880, I=2880, IEEE=dt == "fp32", BLOCK_M=cfg["BLOCK_M"], BLOCK_K=cfg["BLOCK_K"])
            out.append(("moe", "_moe_up_kernel", dt, dict(common, ALPHA=1.702, BLOCK_N=cfg["BLOCK_N_UP"]), launch))
            out.append(("moe", "_moe_down_kernel", dt, dict(common, BLOCK_N=cfg["BLOCK_N_DOWN"]), launch))
        for split, bm in ((False, 64), (True, 16)):
            c = dict(H=64, K=8, D=64, G=8, BLOCK_M=bm, BLOCK_N=64, BLOCK_D=64, HAS_WINDOW=True, SPLIT=split,
                     IEEE=dt == "fp32")
            out.append(("attention", "_attn_fwd_kernel", dt, c, dict(num_warps=8, num_stages=2)))
    out.append(("attention", "_combine_kernel", "bf16", dict(H=64, K=8, D=64, G=8, BLOCK_M=16, BLOCK_D=64),
                dict(num_warps=4)))
    out.append(("moe", "_group_kernel", "bf16", dict(BLOCK_M=16, BLOCK_P=256, BLOCK_E=128, BLOCK_T=32),
                dict(num_warps=8, debug=True)))  # as its @triton.jit(debug=True): the device_assert stays
    out.append(("moe", "_sum_kernel", "bf16", dict(A=4, BLOCK_C=1024), dict(num_warps=4)))
    out.append(("moe", "_dequant_kernel", "bf16", dict(ROW_BYTES=1440, BLOCK_R=16, BLOCK_B=64), {}))
    out.append(("route", "_route_kernel", "bf16", dict(A=4, BLOCK_E=128, BLOCK_A=4), {}))
    return out


def compile_all():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    target = GPUTarget("cuda", 90, 32)
    for mod, name, dt, consts, launch in cases():
        fn = getattr(importlib.import_module(f"optimized.kernels.{mod}"), name)
        sig = {}
        for p in fn.params:
            if p.is_constexpr:
                sig[p.name] = "constexpr"
            elif p.name in ACT:
                sig[p.name] = f"*{dt}"
            elif name == "_route_kernel" and p.name == "w_ptr":
                sig[p.name] = "*fp32"  # the routing weights, not packed expert weights
            else:
                sig[p.name] = TYPES.get(p.name, "i32")  # sizes and counts
        triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target, options=launch)
        print(f"compiled {mod}.{name} {dt} {consts}", flush=True)


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
