"""The decode step's attention prologue as one Triton kernel: RoPE on the q and k heads of the qkv projection,
the rotated k and the v written into the KV cache at slot pos % S, and the slot's position.

The torch path does this in ~14 small kernels a layer (the float32 halves, four products, a cat, a cast, a
modulo, three index_copy_); at batch-1 decode on a GPU each costs a launch even inside a CUDA graph, which is
why it is one kernel here. Mirrors optimized/attention.py's decode path step by step, and its *_ref is exactly
that path (`rope_cache_write_ref`: attention.rope_qkv, then cache.write_decode, the functions it calls), so
the rounding is the same: rotated in float32 (cos/sin carry the YaRN concentration), rounded once to the
activation dtype; v copied as is. Positions must be >= 0 (decode: every row has a token).
Quirks, where they happen below: half-split rotation (i pairs with i + D/2, not interleaved pairs); the ring
slot is pos % S (sliding-window layers keep S = window slots; full layers S = context, so slot = pos).
Not here: the attention (attention.py), prefill (several tokens per row go the torch way: attention.py).

Legend: B rows, H q-heads, K kv-heads, D head_dim, F = D/2, S slots of the layer, W = (H + 2K) * D.
"""
import torch
import triton
import triton.language as tl

from optimized.attention import rope_qkv
from optimized.cache import write_decode


def rope_cache_write_ref(qkv, cos, sin, pos, k_cache, v_cache, pos_cache, H: int, K: int, D: int):
    """The engine's torch decode path: qkv (B, 1, W), cos/sin (B, 1, F) float32, pos (B, 1) int64 >= 0; the cache
    tensors (B, S, K, D) and (B, S) are written in place. Returns the rotated queries (B, 1, H, D)."""
    q, k, v = rope_qkv(qkv, cos, sin, H, K, D)
    write_decode(k_cache, v_cache, pos_cache, k, v, pos)
    return q


@triton.jit
def _rope_cache_kernel(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, kc_ptr, vc_ptr, pc_ptr, S,
                       s_qkv, s_kc_b, s_kc_s, s_vc_b, s_vc_s, s_pc_b,
                       H: tl.constexpr, K: tl.constexpr, D: tl.constexpr, F: tl.constexpr, BLOCK_F: tl.constexpr):
    b = tl.program_id(0)
    j = tl.program_id(1)  # head j of the qkv row: q heads [0, H), k heads [H, H + K), v heads [H + K, H + 2K)
    f = tl.arange(0, BLOCK_F)
    m = f < F
    p = tl.load(pos_ptr + b)
    slot = p % S  # quirk: the ring slot (full layers: S = context, so slot = pos)
    src = qkv_ptr + b * s_qkv + j * D
    x1 = tl.load(src + f, mask=m)  # quirk: halves, i pairs with i + F
    x2 = tl.load(src + F + f, mask=m)
    c = tl.load(cos_ptr + b * F + f, mask=m)
    s = tl.load(sin_ptr + b * F + f, mask=m)
    a, z = x1.to(tl.float32), x2.to(tl.float32)
    r1 = (a * c - z * s).to(x1.dtype)  # float32 math, one rounding to the activation dtype
    r2 = (z * c + a * s).to(x1.dtype)
    jv = f * 0 + j  # the head index on every lane: lane-wise masks (a scalar mask is not portable)
    is_q = jv < H
    is_k = (jv >= H) & (jv < H + K)
    is_v = jv >= H + K
    qd = q_ptr + (b * H + j) * D
    tl.store(qd + f, r1, mask=m & is_q)
    tl.store(qd + F + f, r2, mask=m & is_q)
    kd = kc_ptr + b * s_kc_b + slot * s_kc_s + (j - H) * D
    tl.store(kd + f, r1, mask=m & is_k)
    tl.store(kd + F + f, r2, mask=m & is_k)
    vd = vc_ptr + b * s_vc_b + slot * s_vc_s + (j - H - K) * D
    tl.store(vd + f, x1, mask=m & is_v)  # v: copied as is
    tl.store(vd + F + f, x2, mask=m & is_v)
    first = (f == 0) & (jv == 0)  # one lane of one program writes the slot's position
    tl.store(pc_ptr + b * s_pc_b + slot + f * 0, p + f * 0, mask=first)


def rope_cache_write(qkv, cos, sin, pos, k_cache, v_cache, pos_cache, H: int, K: int, D: int):
    """Same contract as rope_cache_write_ref, one launch of (B, H + 2K) programs. No host sync (CUDA-graph safe);
    positions are not checked here (the engine checks requests before any work)."""
    B, T, W = qkv.shape
    S = pos_cache.shape[1]
    F = D // 2
    if T != 1 or W != (H + 2 * K) * D or D % 2:
        raise ValueError(f"rope_cache_write: qkv must be (B, 1, (H + 2K) * D) = (B, 1, {(H + 2 * K) * D}) with D "
                         f"even, got {tuple(qkv.shape)}, D={D}")
    if tuple(cos.shape) != (B, 1, F) or tuple(sin.shape) != (B, 1, F) or tuple(pos.shape) != (B, 1):
        raise ValueError(f"rope_cache_write: cos/sin must be (B, 1, F)=({B}, 1, {F}) and pos (B, 1), got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}, {tuple(pos.shape)}")
    if tuple(k_cache.shape) != (B, S, K, D) or tuple(v_cache.shape) != (B, S, K, D):
        raise ValueError(f"rope_cache_write: k/v cache must be (B, S, K, D)=({B}, {S}, {K}, {D}), got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if not (qkv.dtype == k_cache.dtype == v_cache.dtype) or cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError(f"rope_cache_write: qkv {qkv.dtype} and the cache {k_cache.dtype}/{v_cache.dtype} must "
                         f"share a dtype; cos/sin must be float32, got {cos.dtype}/{sin.dtype}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(3) != 1 or t.stride(2) != D:
            raise ValueError(f"rope_cache_write: {name} must be dense in its last two axes, strides {t.stride()}")
    qkv = qkv if qkv.stride(2) == 1 else qkv.contiguous()
    cos, sin, pos = cos.contiguous(), sin.contiguous(), pos.reshape(B).long().contiguous()
    q = torch.empty((B, 1, H, D), dtype=qkv.dtype, device=qkv.device)
    _rope_cache_kernel[(B, H + 2 * K)](qkv, cos, sin, pos, q, k_cache, v_cache, pos_cache, S,
                                       qkv.stride(0), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0),
                                       v_cache.stride(1), pos_cache.stride(0),
                                       H=H, K=K, D=D, F=F, BLOCK_F=triton.next_power_of_2(F), num_warps=1)
    return q
