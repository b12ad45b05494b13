"""gpt-oss attention in torch: the batched op (GQA, a sink logit per head, sliding window, position masks) and
the block around it (RMSNorm, one qkv linear, RoPE, KV cache, output linear).

Source: openai/gpt-oss gpt_oss/torch/model.py (sdpa, AttentionBlock). Quirks, where they happen below:
qkv columns are [q heads | k heads | v heads]; query head h uses kv head h // G; the sink is one extra logit
per head joined to the softmax and dropped after it (not scaled); the window is on even layers only.
Scores and softmax are computed in float32 whatever the activation dtype; queries are processed in chunks so
that the score tensor stays under SCORE_BYTES.
CPU decode (one token per row), where ~25 small torch ops per layer cost more than their math: the torch
backend's op (`attention_cpu`) runs `attention_decode` in C, and the block runs RoPE + cache write + attention
as one C call (`decode_block_cpu`); both in csrc/attention_decode.c, tested against the torch steps.

Legend: B rows, T query tokens, S key slots, H q-heads, K kv-heads, G = H // K, D head_dim, C hidden.
"""
import ctypes

import torch

from optimized import cbuild
from optimized.cache import last_slots_only
from optimized.linear import linear, project
from optimized.rope import apply_rope

SCORE_BYTES = 256 * 2**20  # float32 scores of one query chunk (and as much again for the probabilities)


def visible_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """(B, T, S): key slot s visible to query t (empty slots and padding have position -1)."""
    qp, kp = q_pos[:, :, None], k_pos[:, None, :]
    visible = (kp >= 0) & (kp <= qp)
    if window:
        visible &= qp - kp < window  # the last W positions, the query's own included
    return visible


def attention(q, k, v, sinks, sm_scale: float, window: int, q_pos, k_pos):
    """The op (seam B): q (B, T, H, D), k/v (B, S, K, D), sinks (H,) fp32, q_pos (B, T), k_pos (B, S)
    -> (B, T, H, D)."""
    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    assert tuple(k.shape) == tuple(v.shape) == (B, S, K, D) and H == K * G, (q.shape, k.shape, v.shape)
    assert tuple(sinks.shape) == (H,) and tuple(q_pos.shape) == (B, T) and tuple(k_pos.shape) == (B, S)
    kt, vt = k.float().permute(0, 2, 3, 1), v.float().permute(0, 2, 1, 3)  # (B, K, D, S), (B, K, S, D)
    sink = sinks.float().reshape(1, K, G, 1, 1)
    chunk = max(1, SCORE_BYTES // max(1, B * H * S * 4))
    out = []
    for t0 in range(0, T, chunk):
        qc = q[:, t0:t0 + chunk].float().reshape(B, -1, K, G, D)
        Tc = qc.shape[1]
        # "btkgd,bskd->bkgts" as one batched matmul over (b, k): einsum's planning costs more than the math at T=1
        scores = torch.matmul(qc.permute(0, 2, 3, 1, 4).reshape(B, K, G * Tc, D), kt).reshape(B, K, G, Tc, S)
        scores *= sm_scale
        visible = visible_mask(q_pos[:, t0:t0 + chunk], k_pos, window)[:, None, None]  # (B, 1, 1, Tc, S)
        scores = torch.where(visible, scores, float("-inf"))
        logits = torch.cat([scores, sink.expand(B, K, G, Tc, 1)], dim=-1)  # one extra column for the sink
        p = torch.softmax(logits, dim=-1)[..., :S]  # the sink's share is dropped: rows sum to less than 1
        o = torch.matmul(p.reshape(B, K, G * Tc, S), vt).reshape(B, K, G, Tc, D).permute(0, 3, 1, 2, 4)  # btkgd
        out.append(o.reshape(B, Tc, H, D))
    return (out[0] if len(out) == 1 else torch.cat(out, dim=1)).to(q.dtype)


_DECODE_SOURCE = "attention_decode.c"
_P, _I64, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_DECODE_SIGNATURES = {
    "attention_decode": ([_P, _P, _P, ctypes.c_int, _P, _F32, _I64, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64],
                         None),
    "attention_decode_block": ([_P, ctypes.c_int, _P, _P, _P, _P, _P, _P, _P, _F32, _I64, _P, _P, _I64, _I64, _I64,
                                _I64, _I64], None),
}


def _decode_kernel():
    return cbuild.load(_DECODE_SOURCE, _DECODE_SIGNATURES)


def attention_decode(q, k, v, sinks, sm_scale: float, window: int, q_pos, k_pos):
    """The op for one query token per row on CPU, in C (csrc/attention_decode.c; its *_ref is `attention`).
    Same signature and result; k/v float32 or bfloat16 read in place; q_pos (B, 1)."""
    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    assert T == 1 and tuple(k.shape) == tuple(v.shape) == (B, S, K, D) and H % K == 0 and D <= 256
    assert tuple(sinks.shape) == (H,) and tuple(q_pos.shape) == (B, 1) and tuple(k_pos.shape) == (B, S)
    lib = _decode_kernel()
    if lib is None:
        raise RuntimeError(f"the CPU decode attention kernel is unavailable: {cbuild.reasons[_DECODE_SOURCE]}")
    if not (k.dtype == v.dtype and k.dtype in (torch.float32, torch.bfloat16)):
        raise ValueError(f"attention_decode: k/v must both be float32 or bfloat16, got {k.dtype}, {v.dtype}")
    for name, t in (("k", k), ("v", v), ("k_pos", k_pos)):
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"attention_decode: {name} must be a contiguous CPU tensor (strides {t.stride()})")
    qf = q.float().contiguous()
    qp, kp = q_pos.to(torch.int64).contiguous(), k_pos.to(torch.int64)
    sk = sinks.float().contiguous()
    out = torch.empty(B, 1, H, D, dtype=torch.float32)
    scratch = torch.empty(S, dtype=torch.float32)
    lib.attention_decode(qf.data_ptr(), k.data_ptr(), v.data_ptr(), int(k.dtype == torch.bfloat16), sk.data_ptr(),
                         float(sm_scale), int(window or 0), qp.data_ptr(), kp.data_ptr(), out.data_ptr(),
                         scratch.data_ptr(), B, S, H, K, D)
    return out.to(q.dtype)


def attention_cpu(q, k, v, sinks, sm_scale: float, window: int, q_pos, k_pos):
    """The torch backend's op: the C kernel for one CPU query token per row (decode), else `attention`."""
    if (q.device.type == "cpu" and q.shape[1] == 1 and q.shape[3] <= 256 and k.dtype == v.dtype
            and k.dtype in (torch.float32, torch.bfloat16) and k.is_contiguous() and v.is_contiguous()
            and k_pos.is_contiguous() and _decode_kernel() is not None):
        return attention_decode(q, k, v, sinks, sm_scale, window, q_pos, k_pos)
    return attention(q, k, v, sinks, sm_scale, window, q_pos, k_pos)


def decode_block_cpu(qkv, cos, sin, pos, cache, layer: int, sinks, sm_scale: float, window: int, H: int, K: int,
                     D: int):
    """The decode path of attention_block between the qkv and out projections, in one C call: RoPE on q and k,
    the cache write (slot pos % S), attention over the cache. qkv (B, 1, (H+2K)*D), cos/sin (B, 1, D/2), pos (B, 1)
    -> (B, 1, H, D) in qkv's dtype. Tested against the step-by-step torch path (same rounding points)."""
    B, T, W = qkv.shape
    kc, vc, pc = cache.k[layer], cache.v[layer], cache.pos[layer]
    S = pc.shape[1]
    assert T == 1 and W == (H + 2 * K) * D and tuple(kc.shape) == (B, S, K, D) and kc.dtype == qkv.dtype
    c, s, p = cos.reshape(B, D // 2).contiguous(), sin.reshape(B, D // 2).contiguous(), pos.reshape(B).contiguous()
    out = torch.empty(B, 1, H, D, dtype=torch.float32)
    scratch = torch.empty(S + H * D, dtype=torch.float32)
    _decode_kernel().attention_decode_block(
        qkv.data_ptr(), int(qkv.dtype == torch.bfloat16), c.data_ptr(), s.data_ptr(), p.data_ptr(), kc.data_ptr(),
        vc.data_ptr(), pc.data_ptr(), sinks.data_ptr(), float(sm_scale), int(window or 0), out.data_ptr(),
        scratch.data_ptr(), B, S, H, K, D)
    return out.to(qkv.dtype)


def _fused_decode_ok(x, qkv, cos, sin, pos, cache, layer, sinks, op, D) -> bool:
    """The C decode block stands in for exactly what the torch backend would do step by step."""
    return (op is attention_cpu and x.device.type == "cpu" and qkv.dtype in (torch.float32, torch.bfloat16)
            and D <= 256 and D % 2 == 0 and qkv.is_contiguous() and cos.dtype == sin.dtype == torch.float32
            and sinks.dtype == torch.float32 and sinks.is_contiguous() and pos.dtype == torch.int64
            and all(t.is_contiguous() for t in (cache.k[layer], cache.v[layer], cache.pos[layer]))
            and cache.k[layer].dtype == cache.v[layer].dtype == qkv.dtype and FUSED_DECODE
            and _decode_kernel() is not None)


FUSED_DECODE = True  # tests switch it off to compare with the step-by-step path


def rope_qkv(qkv, cos, sin, H: int, K: int, D: int):
    """qkv (B, T, (H + 2K) * D), cos/sin (B, T, D/2) -> q (B, T, H, D) and k (B, T, K, D) rotated, v (B, T, K, D)."""
    B, T, _ = qkv.shape
    qk = apply_rope(qkv[..., :(H + K) * D].reshape(B, T, H + K, D), cos, sin)  # q and k heads rotated at once
    return qk[:, :, :H], qk[:, :, H:], qkv[..., (H + K) * D:].reshape(B, T, K, D)  # head h = k*G + g


def attention_block(x, w, config, layer: int, cos, sin, pos, cache, ops, decode: bool = False,
                    static: bool = False, rows: torch.Tensor | None = None):
    """x (B, T, C) -> x + attention(x); pos (B, T) with -1 for padding; keys/values go into cache.
    ops: the backend (ops.py): its attention, and where it has them its rms_norm, its linear (the norm before qkv
    and the residual add after out fused into them), at decode its qkv_rope_cache_write (the qkv projection with
    RoPE and the cache write in one call), and its rope_cache_write in place of the torch RoPE + cache write
    (decode and prefill: no host sync).
    decode: one valid token per row (no host sync); static: shapes independent of the cache's fill (CUDA graphs).
    rows (B,) given: only token rows[b] of each row is wanted downstream (the last layer when only the last logits
    are): every token's keys and values still go into the cache, the attention and out projection run for those
    tokens alone, and the result is (B, 1, C)."""
    B, T, C = x.shape
    H, K, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    window = config.window_of_layer(layer) or 0
    op, prologue = ops.attention, getattr(ops, "rope_cache_write", None)
    qkv_prologue = getattr(ops, "qkv_rope_cache_write", None)
    kc, vc, pc = cache.k[layer], cache.v[layer], cache.pos[layer]
    S = pc.shape[1]
    if decode and qkv_prologue is not None:  # the qkv projection, its RMSNorm, RoPE and the cache write: one kernel
        q = qkv_prologue(x, w["qkv.weight"], w["qkv.bias"], w["norm.scale"], cos, sin, pos, kc, vc, pc, H, K, D)
        qkv = None
    else:
        qkv = project(ops, x, w["qkv.weight"], w["qkv.bias"], norm_scale=w["norm.scale"])  # (B, T, D*(H+2K))
        if decode and _fused_decode_ok(x, qkv, cos, sin, pos, cache, layer, w["sinks"], op, D):
            o = decode_block_cpu(qkv, cos, sin, pos, cache, layer, w["sinks"], D ** -0.5, window, H, K, D)
            return x + linear(o.reshape(B, T, H * D), w["out.weight"], w["out.bias"])
    if decode or not window:
        # one token per row, or a full layer (slot = position, never reused): write first, attend the cache
        if qkv is not None and prologue is not None:  # RoPE on q and k, k and v into the cache: one kernel
            q = prologue(qkv, cos, sin, pos, kc, vc, pc, H, K, D)
        elif qkv is not None:
            q, k, v = rope_qkv(qkv, cos, sin, H, K, D)
            cache.write(layer, k, v, pos, all_valid=decode)
        used = S if (window or static) else min(S, max(cache.lengths) + T)  # full layers: slots past the
        ks, vs, kp = kc[:, :used], vc[:, :used], pc[:, :used]  # end are empty
    else:
        # a ring and several tokens: a later token of this call may evict a key an earlier one needs, so
        # attend [cache before | new] and keep only each row's last S tokens in the ring (cache.last_slots_only)
        kp = torch.cat([pc, pos], dim=1)
        if prologue is not None:  # the kernel rotates the new keys into the buffers' new half as it writes the ring
            ks, vs = torch.empty((2, B, S + T, K, D), dtype=kc.dtype, device=kc.device)
            ks[:, :S], vs[:, :S] = kc, vc  # the ring before this call: copied before the kernel overwrites it
            q = prologue(qkv, cos, sin, pos, kc, vc, pc, H, K, D, new_kv=(ks[:, S:], vs[:, S:]))
        else:
            q, k, v = rope_qkv(qkv, cos, sin, H, K, D)
            ks, vs = torch.cat([kc, k], dim=1), torch.cat([vc, v], dim=1)
            cache.write(layer, k, v, last_slots_only(pos, S))
    if rows is not None:  # the queries (and residual rows) still wanted; the cache above has every token
        at = (torch.arange(B, device=x.device), rows)
        q, pos, x = q[at][:, None], pos[at][:, None], x[at][:, None]
    o = op(q, ks, vs, w["sinks"], D ** -0.5, window, pos, kp)
    return project(ops, o.reshape(B, -1, H * D), w["out.weight"], w["out.bias"], residual=x)
