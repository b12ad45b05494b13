"""The attention prologue as one Triton kernel: RoPE on the q and k heads of the qkv projection, the rotated k
and the v written into the KV cache at slot pos % S, and the slot's position; for a decode step (one token a row)
and for prefill (several, with padding).

The torch path does this in ~14 small kernels a layer (the float32 halves, four products, a cat, a cast, a
modulo, three index_copy_); at batch-1 decode on a GPU each costs a launch even inside a CUDA graph, which is
why it is one kernel here. At prefill the torch path's cache write (cache.write_tokens) finds the valid tokens
with a nonzero, a host sync every layer that leaves the GPU idle while the CPU catches up; this kernel skips
padding and the tokens a ring does not keep by a mask (positions -1), so a prefill has no host sync.
Mirrors optimized/attention.py's path step by step, and its *_ref is exactly that path (`rope_cache_write_ref`:
attention.rope_qkv, then cache.write_decode or write_tokens with cache.last_slots_only, the functions it calls),
so the rounding is the same: rotated in float32 (cos/sin carry the YaRN concentration), rounded once to the
activation dtype; v copied as is. A ring layer at prefill attends [cache before | new tokens] (attention.py):
`new_kv` takes every token's rotated k and v into the new half of those buffers in the same pass.
Quirks, where they happen below: half-split rotation (i pairs with i + D/2, not interleaved pairs); the ring
slot is pos % S (sliding-window layers keep S = window slots; full layers S = context, so slot = pos); on a
ring only each row's last S tokens are written (an earlier one's slot is a later one's).
`qkv_rope_cache_write` goes one launch further at batch-1 decode (up to kernels/linear.py's LINEAR_MAX_ROWS
rows): the qkv projection itself, with its RMSNorm, and this prologue in its epilogue. Each program computes the
weight rows of P RoPE pairs of one head (rows i and i + D/2 together, interleaved so that one split of the
projected block yields both halves) with linear.py's `project_rows`, rounds them once as the linear kernel's
output is rounded, and stores them as `_rope_cache_kernel` does (the shared `_rope_store`): the same numbers as
linear then rope_cache_write, up to the order of the projection's fp32 sums. Its *_ref is those torch steps.
Not here: the attention (attention.py, kernels/attention.py).

Legend: B rows, H q-heads, K kv-heads, D head_dim, F = D/2, S slots of the layer, W = (H + 2K) * D.
"""
import torch
import triton
import triton.language as tl

from optimized.attention import rope_qkv
from optimized.cache import last_slots_only, write_decode, write_tokens
from optimized.kernels import tuning
from optimized.kernels.linear import LINEAR_MAX_ROWS, check_args, linear, linear_ref, project_rows
from optimized.kernels.pdl import _pdl_enter, _prefetch_rows, launch_args
from reference.norm import EPS


ROPE_HEADS = 16  # heads a program of _rope_cache_kernel rotates and stores (16 x 32 pairs on 20b, 2 warps)


def rope_cache_write_ref(qkv, cos, sin, pos, k_cache, v_cache, pos_cache, H: int, K: int, D: int, new_kv=None):
    """The engine's torch path: qkv (B, T, W), cos/sin (B, T, F) float32, pos (B, T) int64 (-1: padding); the
    cache tensors (B, S, K, D) and (B, S) are written in place, each row's last S tokens (all of them but on a
    ring); new_kv (k_new, v_new) (B, T, K, D) given: every token's rotated k and its v copied there too (the
    ring's [cache | new] in attention.py). Returns the rotated queries (B, T, H, D). One token a row (decode):
    cache.write_decode, positions >= 0."""
    q, k, v = rope_qkv(qkv, cos, sin, H, K, D)
    if qkv.shape[1] == 1:
        write_decode(k_cache, v_cache, pos_cache, k, v, pos)
    else:
        write_tokens(k_cache, v_cache, pos_cache, k, v, last_slots_only(pos, pos_cache.shape[1]))
    if new_kv is not None:
        new_kv[0].copy_(k)
        new_kv[1].copy_(v)
    return q


@triton.jit
def _rope_store(x1, x2, f, m, j, b, t, T, cos_ptr, sin_ptr, pos_ptr, S, q_ptr, kc_ptr, vc_ptr, pc_ptr,
                s_kc_b, s_kc_s, s_vc_b, s_vc_s, s_pc_b, kn_ptr, vn_ptr, s_kn_b, s_kn_t, H: tl.constexpr,
                K: tl.constexpr, D: tl.constexpr, F: tl.constexpr, NEW: tl.constexpr):
    """Lanes f (pairs f and f + F; m: the lanes in use) of head(s) j of token t of row b, x1 and x2 in the
    activation dtype: q and k heads rotated by the token's cos/sin (float32 math, one rounding) into q / the cache
    slot of the token's write position, v heads copied into the cache; the slot's position written by lane f == 0
    of head 0 (one a token). A write position < 0 writes nothing to the cache (padding, or a ring slot a later token
    of the call takes). NEW: the rotated k and the v of every token also to kn/vn (b, t) (a ring's [cache | new]).
    j is a scalar (one head) or a column (BLOCK_J heads of the token); f then a row: shapes broadcast."""
    tok = b * T + t  # the token's row in q, cos, sin and pos
    p = tl.load(pos_ptr + tok)
    slot = p % S  # quirk: the ring slot (full layers: S = context, so slot = pos)
    c = tl.load(cos_ptr + tok * F + f, mask=f < F)
    s = tl.load(sin_ptr + tok * F + f, mask=f < F)
    a, z = x1.to(tl.float32), x2.to(tl.float32)
    r1 = (a * c - z * s).to(x1.dtype)  # float32 math, one rounding to the activation dtype
    r2 = (z * c + a * s).to(x1.dtype)
    jv = f * 0 + j  # the head index on every lane: lane-wise masks (a scalar mask is not portable)
    is_q = jv < H
    is_k = (jv >= H) & (jv < H + K)
    is_v = jv >= H + K
    zero = jv * 0
    w = (p + zero) >= 0  # the cache written (lane-wise, as the head masks)
    qd = q_ptr + (tok * H + j) * D
    tl.store(qd + f, r1, mask=m & is_q)
    tl.store(qd + F + f, r2, mask=m & is_q)
    kd = kc_ptr + b * s_kc_b + slot * s_kc_s + (j - H) * D
    tl.store(kd + f, r1, mask=m & is_k & w)
    tl.store(kd + F + f, r2, mask=m & is_k & w)
    vd = vc_ptr + b * s_vc_b + slot * s_vc_s + (j - H - K) * D
    tl.store(vd + f, x1, mask=m & is_v & w)  # v: copied as is
    tl.store(vd + F + f, x2, mask=m & is_v & w)
    if NEW:
        kn = kn_ptr + b * s_kn_b + t * s_kn_t + (j - H) * D
        tl.store(kn + f, r1, mask=m & is_k)
        tl.store(kn + F + f, r2, mask=m & is_k)
        vn = vn_ptr + b * s_kn_b + t * s_kn_t + (j - H - K) * D
        tl.store(vn + f, x1, mask=m & is_v)
        tl.store(vn + F + f, x2, mask=m & is_v)
    first = (f == 0) & (jv == 0) & w  # one lane of one program writes the slot's position
    tl.store(pc_ptr + b * s_pc_b + slot + zero, p + zero, mask=first)


@triton.jit
def _rope_cache_kernel(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, kc_ptr, vc_ptr, pc_ptr, kn_ptr, vn_ptr, S, T,
                       s_qkv_b, s_qkv_t, s_kc_b, s_kc_s, s_vc_b, s_vc_s, s_pc_b, s_kn_b, s_kn_t,
                       H: tl.constexpr, K: tl.constexpr, D: tl.constexpr, F: tl.constexpr, NEW: tl.constexpr,
                       BLOCK_J: tl.constexpr, BLOCK_F: tl.constexpr):
    """Program: BLOCK_J heads of token t of row b at once (a (BLOCK_J, BLOCK_F) tile: head j, pair f)."""
    b = (tl.program_id(0) // T).to(tl.int64)  # int64: b * (a row's cache) can pass 2**31
    t = tl.program_id(0) % T
    j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)[:, None]  # head j: q [0, H), k [H, H + K), v [H + K, H + 2K)
    f = tl.arange(0, BLOCK_F)[None, :]
    m = (j < H + 2 * K) & (f < F)
    src = qkv_ptr + b * s_qkv_b + t * s_qkv_t + j * D
    x1 = tl.load(src + f, mask=m)  # quirk: halves, i pairs with i + F
    x2 = tl.load(src + F + f, mask=m)
    _rope_store(x1, x2, f, m, j, b, t, T, cos_ptr, sin_ptr, pos_ptr, S, q_ptr, kc_ptr, vc_ptr, pc_ptr,
                s_kc_b, s_kc_s, s_vc_b, s_vc_s, s_pc_b, kn_ptr, vn_ptr, s_kn_b, s_kn_t, H, K, D, F, NEW)


@triton.jit
def _qkv_rope_cache_kernel(x_ptr, w_ptr, b_ptr, scale_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, kc_ptr, vc_ptr, pc_ptr,
                           N, S, eps, s_kc_b, s_kc_s, s_vc_b, s_vc_s, s_pc_b,
                           C: tl.constexpr, H: tl.constexpr, K: tl.constexpr, D: tl.constexpr, F: tl.constexpr,
                           P: tl.constexpr, HAS_BIAS: tl.constexpr, NORM: tl.constexpr, BLOCK_C: tl.constexpr,
                           PDL: tl.constexpr):
    """Program (P pairs of head j, row n): the qkv rows of pairs i0..i0+P-1 of head j (row i with row i + F, the
    RoPE's partner) computed as kernels/linear.py's kernel computes them (its project_rows: the same sums, rounded
    once to the activation dtype), then rotated and stored as _rope_cache_kernel does (its _rope_store).
    Rows vary fastest, as in the linear kernel (a block of weight rows from HBM once). PDL: pdl.py."""
    n = (tl.program_id(0) % N).to(tl.int64)
    pid = tl.program_id(0) // N
    j = pid // (F // P)  # the head
    i0 = (pid % (F // P)) * P  # its first pair
    r = tl.arange(0, 2 * P)
    offs_o = j * D + i0 + r // 2 + (r % 2) * F  # interleaved: row 2i is pair i's first half, 2i + 1 its second
    W: tl.constexpr = (H + 2 * K) * D
    _prefetch_rows(PDL, w_ptr, offs_o, offs_o < W, C)  # PDL == 2: this program's weight rows into L2 before the wait
    _pdl_enter(PDL)
    y = project_rows(x_ptr, w_ptr, b_ptr, scale_ptr, n, offs_o, offs_o < W, eps, C, W, HAS_BIAS, NORM, 2 * P,
                     BLOCK_C)
    x1, x2 = tl.split(tl.reshape(y.to(q_ptr.dtype.element_ty), [P, 2]))  # qkv rounded, as linear's output is
    f = i0 + tl.arange(0, P)
    _rope_store(x1, x2, f, f < F, j, n, 0, 1, cos_ptr, sin_ptr, pos_ptr, S, q_ptr, kc_ptr, vc_ptr, pc_ptr,
                s_kc_b, s_kc_s, s_vc_b, s_vc_s, s_pc_b, q_ptr, q_ptr, 0, 0, H, K, D, F, False)


def _check_cache_args(name, B, T, dtype, cos, sin, pos, k_cache, v_cache, pos_cache, K: int, D: int):
    """The arguments rope_cache_write and qkv_rope_cache_write share; dtype: the activations'."""
    S, F = pos_cache.shape[1], D // 2
    if tuple(cos.shape) != (B, T, F) or tuple(sin.shape) != (B, T, F) or tuple(pos.shape) != (B, T):
        raise ValueError(f"{name}: cos/sin must be (B, T, F)=({B}, {T}, {F}) and pos (B, T), got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}, {tuple(pos.shape)}")
    if tuple(k_cache.shape) != (B, S, K, D) or tuple(v_cache.shape) != (B, S, K, D):
        raise ValueError(f"{name}: k/v cache must be (B, S, K, D)=({B}, {S}, {K}, {D}), got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if not (dtype == k_cache.dtype == v_cache.dtype) or cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError(f"{name}: qkv {dtype} and the cache {k_cache.dtype}/{v_cache.dtype} must "
                         f"share a dtype; cos/sin must be float32, got {cos.dtype}/{sin.dtype}")
    if pos.dtype.is_floating_point:
        raise ValueError(f"{name}: positions must be integers, got {pos.dtype}")
    for what, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(3) != 1 or t.stride(2) != D:
            raise ValueError(f"{name}: {what} must be dense in its last two axes, strides {t.stride()}")
    if pos_cache.stride(1) != 1:
        raise ValueError(f"{name}: pos_cache must be dense in its slots, strides {pos_cache.stride()}")


def _check_new_kv(new_kv, B, T, K, D, dtype, device):
    """rope_cache_write's new_kv: two (B, T, K, D) tensors of the activations' dtype, dense in their last two axes,
    with the same strides (views of attention.py's [cache | new] buffers are fine)."""
    if not (isinstance(new_kv, (tuple, list)) and len(new_kv) == 2):
        raise ValueError(f"rope_cache_write: new_kv must be a pair (k_new, v_new), got {type(new_kv).__name__}")
    kn, vn = new_kv
    for what, t in (("k_new", kn), ("v_new", vn)):
        if tuple(t.shape) != (B, T, K, D) or t.dtype != dtype or t.device != device:
            raise ValueError(f"rope_cache_write: {what} must be (B, T, K, D)=({B}, {T}, {K}, {D}) {dtype} on "
                             f"{device}, got {tuple(t.shape)} {t.dtype} on {t.device}")
        if t.stride(3) != 1 or t.stride(2) != D or t.stride() != kn.stride():
            raise ValueError(f"rope_cache_write: k_new and v_new must be dense in their last two axes with the same "
                             f"strides, got {kn.stride()} and {vn.stride()}")


def rope_cache_write(qkv, cos, sin, pos, k_cache, v_cache, pos_cache, H: int, K: int, D: int, new_kv=None):
    """Same contract as rope_cache_write_ref, one launch of B * T * cdiv(H + 2K, ROPE_HEADS) programs (ROPE_HEADS
    heads of a token each: 20b 5 a token, 80 heads of 32 pairs). No host
    sync (CUDA-graph safe; several tokens a row: last_slots_only's few torch ops first); positions are not checked
    here (the engine checks requests before any work)."""
    B, T, W = qkv.shape
    S = pos_cache.shape[1]
    F = D // 2
    if T == 0 or W != (H + 2 * K) * D or D % 2:
        raise ValueError(f"rope_cache_write: qkv must be (B, T >= 1, (H + 2K) * D) = (B, T, {(H + 2 * K) * D}) with "
                         f"D even, got {tuple(qkv.shape)}, D={D}")
    _check_cache_args("rope_cache_write", B, T, qkv.dtype, cos, sin, pos, k_cache, v_cache, pos_cache, K, D)
    if new_kv is not None:
        _check_new_kv(new_kv, B, T, K, D, qkv.dtype, qkv.device)
    kn, vn = new_kv if new_kv is not None else (qkv, qkv)  # placeholder pointers when NEW is off
    s_kn = kn.stride()[:2] if new_kv is not None else (0, 0)
    qkv = qkv if qkv.stride(2) == 1 else qkv.contiguous()
    wpos = pos if T == 1 else last_slots_only(pos, S)  # quirk: on a ring a later token of the call takes the slot
    cos, sin, wpos = cos.contiguous(), sin.contiguous(), wpos.long().contiguous()
    q = torch.empty((B, T, H, D), dtype=qkv.dtype, device=qkv.device)
    BLOCK_J = min(ROPE_HEADS, triton.next_power_of_2(H + 2 * K))
    _rope_cache_kernel[(B * T, triton.cdiv(H + 2 * K, BLOCK_J))](
        qkv, cos, sin, wpos, q, k_cache, v_cache, pos_cache, kn, vn, S, T, qkv.stride(0), qkv.stride(1),
        k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1), pos_cache.stride(0), *s_kn,
        H=H, K=K, D=D, F=F, NEW=new_kv is not None, BLOCK_J=BLOCK_J, BLOCK_F=triton.next_power_of_2(F), num_warps=2)
    return q


def qkv_rope_cache_write_ref(x, w, b, norm_scale, cos, sin, pos, k_cache, v_cache, pos_cache, H: int, K: int,
                             D: int, eps: float = EPS):
    """The torch steps: qkv = linear(rms_norm(x, norm_scale), w, b) (norm_scale None: x as is), then
    rope_cache_write_ref. x (B, 1, C), w ((H + 2K) * D, C), b or None -> q (B, 1, H, D); the cache written."""
    return rope_cache_write_ref(linear_ref(x, w, b, norm_scale=norm_scale, eps=eps), cos, sin, pos, k_cache, v_cache,
                                pos_cache, H, K, D)


def _pairs_a_program(F: int) -> int:
    """P: pairs of a head a program rotates, the largest power of 2 <= tuning.LINEAR_CONFIG's BLOCK_O / 2 dividing F
    (20b: F = 32, P = 4: 8 weight rows a program as the linear kernel, 640 programs a row)."""
    P = tuning.LINEAR_CONFIG["BLOCK_O"] // 2
    while F % P:
        P //= 2
    return P


def qkv_rope_cache_write(x, w, b, norm_scale, cos, sin, pos, k_cache, v_cache, pos_cache, H: int, K: int, D: int,
                         eps: float = EPS):
    """Same contract as qkv_rope_cache_write_ref: the qkv projection (its RMSNorm in the prologue, as
    kernels/linear.py) with RoPE and the cache write in its epilogue, one launch, for up to LINEAR_MAX_ROWS rows;
    more rows: linear then rope_cache_write (two launches, the projection on cuBLAS). No host sync."""
    B, T, C = x.shape
    W = (H + 2 * K) * D
    if T != 1 or D % 2 or w.dim() != 2 or tuple(w.shape) != (W, C):
        raise ValueError(f"qkv_rope_cache_write: x must be (B, 1, C) and w ((H + 2K) * D, C) = ({W}, {C}) with D "
                         f"even, got x {tuple(x.shape)}, w {tuple(w.shape)}, D={D}")
    if B > LINEAR_MAX_ROWS or B == 0:
        qkv = linear(x, w, b, norm_scale=norm_scale, eps=eps)
        return rope_cache_write(qkv, cos, sin, pos, k_cache, v_cache, pos_cache, H, K, D)
    check_args("qkv_rope_cache_write", x, w, b, norm_scale)
    _check_cache_args("qkv_rope_cache_write", B, 1, x.dtype, cos, sin, pos, k_cache, v_cache, pos_cache, K, D)
    F = D // 2
    P = _pairs_a_program(F)
    x, w = x.contiguous(), w.contiguous()
    cos, sin, pos = cos.contiguous(), sin.contiguous(), pos.reshape(B).long().contiguous()
    q = torch.empty((B, 1, H, D), dtype=x.dtype, device=x.device)
    cfg = tuning.LINEAR_CONFIG
    _qkv_rope_cache_kernel[(B * (H + 2 * K) * (F // P),)](
        x, w, b if b is not None else w, norm_scale if norm_scale is not None else w, cos, sin, pos, q, k_cache,
        v_cache, pos_cache, B, pos_cache.shape[1], float(eps), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0),
        v_cache.stride(1), pos_cache.stride(0), C=C, H=H, K=K, D=D, F=F, P=P, HAS_BIAS=b is not None,
        NORM=norm_scale is not None, BLOCK_C=cfg["BLOCK_C"], num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"], **launch_args(x.device))
    return q
