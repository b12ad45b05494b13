"""The engine's op seam: route, moe, attention by backend name.

"torch" (default) is the pure-torch implementation in moe.py and attention.py; the Triton kernels' `*_ref`s call
these functions, or say in one line why they must round otherwise (moe_ref, attention_ref: a float64 input stays
float64, where these compute in fp32). On CPU its decode step calls C kernels (mxfp4_cpu.py from moe, attention_cpu's
one-token path), each tested against these torch functions.
"triton" imports `optimized.kernels` lazily, only when asked for: it must define the three ops with IDENTICAL
signatures (this module is the seam between the engine and its kernels); an op it does not define is an error,
not a silent fallback, and so is a package that is missing or fails to import.

  route(router_logits [N, E], k) -> (ids int32 [N, k], weights fp32 [N, k])
  moe(x [N, C], ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit, residual=None,
      norm_scale=None) -> [N, C]
      (residual [N, C] given: residual + the MoE, rounded as that add in torch would be; norm_scale [C] fp32
      given: the experts see rms_norm(x, norm_scale); the torch backend's also takes activations="int8", the
      experts' inputs in Q8_0 on CPU, which moe_block passes only when the Model was loaded with it)
  attention(q [B, T, H, D], k [B, S, K, D], v, sinks fp32 [H], sm_scale, window, q_pos [B, T], k_pos [B, S])
      -> [B, T, H, D]
Optional (None when a backend has none; attention.py then runs its torch steps):
  rope_cache_write(qkv [B, T, (H+2K)*D], cos, sin [B, T, D/2] fp32, pos [B, T] (-1 padding), k_cache, v_cache,
      pos_cache, H, K, D, new_kv=None) -> q [B, T, H, D]: RoPE and the cache write in one call, decode or prefill
      (each row's last S tokens written; new_kv = (k_new, v_new) [B, T, K, D] also receive every token's rotated k
      and v: a ring's [cache | new]); no host sync (the torch backend's CPU decode has its own C version inside
      attention.py)
  qkv_rope_cache_write(x [B, 1, C], w [(H+2K)*D, C], b, norm_scale fp32 [C] or None, cos, sin, pos, k_cache,
      v_cache, pos_cache, H, K, D) -> q [B, 1, H, D]: the same with the qkv projection (and its RMSNorm) in front,
      in one call (used before rope_cache_write where a backend has both)
  rms_norm(x [..., C], scale fp32 [C]) -> [..., C]: norm.py's math in one call (the torch backend uses norm.py)
  linear(x [..., C], w [O, C], b [O] or None, residual=None [..., O], norm_scale=None [C] fp32) -> [..., O]:
      [residual +] linear(rms_norm?(x), w, b) in one call (linear.py `project` runs the steps where it is None)
  routed_moe(x [N, C], gate_w [E, C], gate_b [E], norm_scale [C] fp32, k, w1_blocks, w1_scales, b1, w2_blocks,
      w2_scales, b2, limit, residual=None) -> (out [N, C], router_logits [N, E], ids int32 [N, k], weights fp32
      [N, k]): the MoE block after its input in one call (moe.py `moe_block` runs norm, router, route, moe where
      it is None)
  moe_tile_rows(dtype) -> int: rows of one expert a prefill tile of `moe` holds (each tile decodes its expert's
      weights once); generate.py grows prefill chunks until an expert's expected rows fill two such tiles
"""
import importlib
from types import SimpleNamespace

from optimized.attention import attention, attention_cpu
from optimized.moe import moe, route

OPS = ("route", "moe", "attention")
OPTIONAL = ("rope_cache_write", "qkv_rope_cache_write", "rms_norm", "linear", "routed_moe", "moe_tile_rows")
BACKENDS = ("torch", "triton")


class BackendError(RuntimeError):
    """A backend that was asked for by name and cannot be used; the message says why."""


def get_backend(name: str = "torch") -> SimpleNamespace:
    if name == "torch":
        return SimpleNamespace(name="torch", route=route, moe=moe, attention=attention_cpu,  # C at CPU decode
                               rope_cache_write=None, qkv_rope_cache_write=None, rms_norm=None, linear=None,
                               routed_moe=None, moe_tile_rows=None)
    if name == "triton":
        try:
            kernels = importlib.import_module("optimized.kernels")
        except Exception as e:  # ImportError, or a kernel module failing at import (no GPU, triton missing...)
            raise BackendError(f"backend 'triton' needs the package optimized.kernels, which failed to import: "
                               f"{type(e).__name__}: {e}. Use backend 'torch'.") from e
        missing = [op for op in OPS if not callable(getattr(kernels, op, None))]
        if missing:
            raise BackendError(f"backend 'triton': optimized.kernels does not define {missing} "
                               f"(it must define {list(OPS)} with the torch ops' signatures)")
        return SimpleNamespace(name="triton", **{op: getattr(kernels, op, None) for op in OPS + OPTIONAL})
    raise BackendError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}")


__all__ = ["OPS", "OPTIONAL", "BACKENDS", "BackendError", "attention", "get_backend", "moe", "route"]
