"""Triton kernels for the optimized engine, with the same signatures as the pure-torch ops in optimized/ops.py.

Each kernel file holds its plain-torch `*_ref` beside the kernel; tests/test_kernels_*.py compares them.
  route(router_logits, k)                                   route.py      top-k + softmax, one program per token
  moe(x, ids, weights, w1_blocks, w1_scales, b1,
      w2_blocks, w2_scales, b2, limit)                      moe.py        MXFP4 experts, SwiGLU fused, sum over k
  attention(q, k, v, sinks, sm_scale, window, q_pos, k_pos) attention.py  flash attention with sinks, window, GQA
  rope_cache_write(qkv, cos, sin, pos, k_cache, v_cache,
      pos_cache, H, K, D, new_kv)                           rope_cache.py attention prologue: RoPE + cache write
                                                                          (decode and prefill, no host sync)
  qkv_rope_cache_write(x, w, b, norm_scale, cos, sin, pos,
      k_cache, v_cache, pos_cache, H, K, D)                 rope_cache.py the same with the qkv projection in front
  rms_norm(x, scale)                                        rms_norm.py   one program per row
  linear(x, w, b, residual, norm_scale)                     linear.py     decode projections, norm and add fused
  routed_moe(x, gate_w, gate_b, norm_scale, k, experts...)  moe.py        the MoE block: router + routing + grouping
                                                                          in one launch, then up and down
The MoE's kernels live beside moe.py (the op, its *_ref and `plan`, which picks them): moe_group.py (grouping the
(token, slot) pairs by expert; the router kernel of routed_moe), moe_gemv.py (small batches: GEMV, fp32 FMAs),
moe_mma.py (tensor-core tiles, decode and prefill); mxfp4.py holds the FP4 decode in registers that both expert
families use (mxfp4_dequant runs it alone, for tests), rounding.py the helpers that give the kernels torch's
rounding points (an IEEE fp32 dot, the RMSNorm statistic, the residual add), tuning.py every kernel's tuning knobs
(tiles, the thresholds between paths), read at each launch: a tool sets them there (`tuning.override`). The MoE
kernels read the release's packed layout as is: there is no load-time re-layout to call.
aot.py compiles any of them for a GPU target without a GPU (tests/test_kernels_compile.py, bench/sass_roofline.py).
pdl.py: programmatic dependent launch for a decode step's kernels (Hopper; off unless GPT_OSS_KIT_PDL=1 until the
device check's A/B says it pays); grid_sync.py: the last program to finish does a kernel's final step.

On a machine without CUDA, Triton kernels can only run through the Triton interpreter on CPU tensors; the
interpreter is chosen when a kernel is defined (at import), so it is switched on here (optimized/interpreter.py),
before the kernel modules are imported, unless TRITON_INTERPRET is already set. It changes nothing where CUDA is
available.
"""
from optimized.interpreter import interpret_on_cpu

interpret_on_cpu()

from optimized.kernels.attention import attention  # noqa: E402
from optimized.kernels.linear import linear  # noqa: E402
from optimized.kernels.moe import moe, prefill_tile_rows as moe_tile_rows, routed_moe  # noqa: E402
from optimized.kernels.rms_norm import rms_norm  # noqa: E402
from optimized.kernels.rope_cache import qkv_rope_cache_write, rope_cache_write  # noqa: E402
from optimized.kernels.route import route  # noqa: E402

__all__ = ["attention", "linear", "moe", "moe_tile_rows", "qkv_rope_cache_write", "rms_norm", "rope_cache_write",
           "route", "routed_moe"]
