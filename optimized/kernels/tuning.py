"""The Triton kernels' tuning knobs, as data: tile sizes and the thresholds between kernel paths.

The wrappers read this module's attributes at each launch (never a copy taken at import), so a tool changes a knob
in one place: bench/gpu.py's sweeps with `override`, tests with monkeypatch on this module. None changes what is
computed, only how (tiles, which kernel): results differ at most in rounding. Set by reasoning, ptxas's register
counts and bench/sass_roofline.py's SASS counts, not yet by a timing: bench/gpu.py's sweeps time the alternatives on
a GPU and bench/decide.py reads them. Why each value: optimized/README.md "Triton MoE" (the MoE's), BENCHMARKS.md
"GPU" (all, with their sweeps).
Not here: a kernel's fixed sizes (a block of 32 FP4 values, the grouping kernel's limits), which are not knobs.
"""
import contextlib

# kernels/linear.py (and the projections in rope_cache.py's qkv kernel and moe_group.py's router kernel): weight
# rows a program and features a step. At batch 1 the out projection (2880 rows) is 360 programs (balance 0.91 over
# 132 SMs), qkv 640; each step 8 KB of bf16 weights on 4 warps.
LINEAR_CONFIG = dict(BLOCK_O=8, BLOCK_C=512, num_warps=4, num_stages=3)

# kernels/attention.py at bf16/fp16 prefill (`tiles`): 128 (token, head) rows on 8 warps, two warpgroups of 64 rows;
# 128 keys a step on full layers (a prompt is mostly unmasked blocks), 64 on sliding ones (their band covers ~3
# blocks of 64 keys, one unmasked, but 2 masked blocks of 128); the SASS counts: BENCHMARKS.md "GPU"
PREFILL_TILE = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_N_WINDOW=64, num_warps=8)

# kernels/moe.py `plan`: the GEMV kernels (moe_gemv.py) up to GEMV_MAX_TOKENS tokens whose pairs are at most
# GEMV_PAIRS_PER_EXPERT times the experts they are expected to hit (`gemv_pays`), else the tensor-core ones
# (moe_mma.py): DECODE_CONFIG's 16-row tiles up to DECODE_MAX_TOKENS tokens, then the prefill tiles
GEMV_MAX_TOKENS = 16
GEMV_PAIRS_PER_EXPERT = 2.0
GEMV_CONFIG = dict(BLOCK_N_UP=16, BLOCK_N_DOWN=8, BLOCK_K=512, num_warps=4, num_stages=2)
DECODE_MAX_TOKENS = 64
DECODE_CONFIG = dict(BLOCK_M=16, BLOCK_N_UP=32, BLOCK_N_DOWN=32, BLOCK_K=128, num_warps=4, num_stages=3, MX_DOT=True)
PREFILL_CONFIG = dict(BLOCK_M=128, BLOCK_N_UP=128, BLOCK_N_DOWN=128, BLOCK_K=64, num_warps=8, num_stages=3,
                      MX_DOT=True)
PREFILL_CONFIG_FP32 = dict(BLOCK_M=64, BLOCK_N_UP=64, BLOCK_N_DOWN=64, BLOCK_K=128, num_warps=8, num_stages=3,
                           MX_DOT=False)  # the IEEE path, for conformance, not speed: it spills at any size

KNOBS = ("LINEAR_CONFIG", "PREFILL_TILE", "GEMV_MAX_TOKENS", "GEMV_PAIRS_PER_EXPERT", "GEMV_CONFIG",
         "DECODE_MAX_TOKENS", "DECODE_CONFIG", "PREFILL_CONFIG", "PREFILL_CONFIG_FP32")


@contextlib.contextmanager
def override(**knobs):
    """Set knobs (by name) meanwhile, then restore them: `with tuning.override(LINEAR_CONFIG=cfg): ...`."""
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        raise KeyError(f"tuning: no knob {sorted(unknown)}; the knobs are {list(KNOBS)}")
    module = globals()
    saved = {name: module[name] for name in knobs}
    module.update(knobs)
    try:
        yield
    finally:
        module.update(saved)
