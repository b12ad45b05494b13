"""The MoE experts on tensor cores: tiles of up to BLOCK_M (token, slot) pairs of one expert, the packed MXFP4
weights decoded in registers (kernels/mxfp4.py). What kernels/moe.py runs beyond the GEMV regime: decode at
several tokens (tiles of 16 rows) and prefill (64 rows in fp32, 128 in bf16/fp16); the same kernels, other tiles.

Mirrors reference/moe.py (swiglu, the expert loop of moe_block). In order, after moe_group.py's grouping:
  1. `_moe_up_kernel`: per (tile, block of I columns), h = swiglu(x @ W1[e].T + b1[e]), SwiGLU in the epilogue;
  2. `_moe_down_kernel`: per (tile, block of C columns), y = (h @ W2[e].T + b2[e]) * routing weight, one fp32 row
     per (token, slot) pair;
  3. `_sum_kernel` adds each token's A rows in a fixed order, rounds to x's dtype and, given the block's residual,
     adds it (the launch the residual add would take anyway). Chosen over atomic adds into a zeroed fp32 (N, C):
     the result is bitwise reproducible (atomics make the order of the <= 4 fp32 terms run-dependent), and it
     costs no more launches (atomics need a zero-fill and a final cast).
The K step: with bf16/fp16 x, `tl.dot_scaled` on the packed codes and E8M0 scales (MX_DOT: Triton decodes in the
dot operand's registers); fp32 x keeps the decode + `tl.dot` (load_fp4_t), in IEEE fp32.
Quirks, each where it happens below: mlp1's rows interleave gate (even) and linear (odd); SwiGLU: gate clamped
above only, linear clamped both ways, gate * sigmoid(1.702 gate) * (linear + 1); the expert bias before the
routing weight. The tiles (kernels/tuning.py) and their SASS counts: optimized/README.md "Triton MoE".

Legend: N tokens, A experts per token, P = N*A (token, slot) pairs, E experts, C hidden, I intermediate.
"""
import torch
import triton
import triton.language as tl

from optimized.kernels.moe_group import tile_of
from optimized.kernels.mxfp4 import MX_DOT_FORMATS, load_fp4_t, load_mx, mx_dot_available
from optimized.kernels.rounding import dot, round_add
from reference.moe import SWIGLU_ALPHA

SUM_BLOCK = 1024


def moe_mma(x, weights, grouping, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float, residual, cfg):
    """The three launches over moe_group.py's grouping (order, tile_expert, tile_start, tile_stop) at cfg's tiles:
    x (N, C), weights fp32 (N, A), the packed experts, residual (N, C) or None -> (N, C) in x's dtype."""
    N, C = x.shape
    A, I = weights.shape[1], w1_blocks.shape[1] // 2
    order, tile_expert, tile_start, tile_stop = grouping
    n_tiles = tile_expert.numel()
    out = torch.empty_like(x)
    res = residual.contiguous() if residual is not None else x  # x: a placeholder pointer when HAS_RES is off
    h = torch.empty((N * A, I), dtype=x.dtype, device=x.device)  # rows in the sorted pair order
    y = torch.empty((N * A, C), dtype=torch.float32, device=x.device)  # rows in pair order: token n, slot j = n*A + j
    ieee = x.dtype == torch.float32
    mx = dict(MX_DOT=cfg["MX_DOT"] and x.dtype in MX_DOT_FORMATS and mx_dot_available(),
              FMT=MX_DOT_FORMATS.get(x.dtype, "bf16"))
    BM, BK = cfg["BLOCK_M"], cfg["BLOCK_K"]
    launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    _moe_up_kernel[(n_tiles, triton.cdiv(I, cfg["BLOCK_N_UP"]))](
        x, order, tile_expert, tile_start, tile_stop, w1_blocks, w1_scales, b1, h, float(limit), SWIGLU_ALPHA,
        A=A, C=C, I=I, IEEE=ieee, **mx, BLOCK_M=BM, BLOCK_N=cfg["BLOCK_N_UP"], BLOCK_K=BK, **launch)
    _moe_down_kernel[(n_tiles, triton.cdiv(C, cfg["BLOCK_N_DOWN"]))](
        h, order, weights, tile_expert, tile_start, tile_stop, w2_blocks, w2_scales, b2, y,
        A=A, C=C, I=I, IEEE=ieee, **mx, BLOCK_M=BM, BLOCK_N=cfg["BLOCK_N_DOWN"], BLOCK_K=BK, **launch)
    _sum_kernel[(N, triton.cdiv(C, SUM_BLOCK))](y, res, out, C, A=A, HAS_RES=residual is not None,
                                                 BLOCK_C=SUM_BLOCK, num_warps=4)
    return out


@triton.jit
def _moe_up_kernel(x_ptr, pair_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr,
                   w_ptr, s_ptr, b_ptr, h_ptr, limit, ALPHA: tl.constexpr,
                   A: tl.constexpr, C: tl.constexpr, I: tl.constexpr, IEEE: tl.constexpr,
                   MX_DOT: tl.constexpr, FMT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    start, stop, e = tile_of(tile_expert_ptr, tile_start_ptr, tile_stop_ptr)
    if start >= stop:  # one of the spare tiles of the static grid
        return
    DT = x_ptr.dtype.element_ty
    offs_m = start + tl.arange(0, BLOCK_M)  # rows of this expert's run in the sorted pair order
    mask_m = offs_m < stop
    tok = (tl.load(pair_ptr + offs_m, mask=mask_m, other=0) // A).to(tl.int64)
    offs_i = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_i = offs_i < I
    row_g = e * (2 * I) + 2 * offs_i  # quirk: gate rows are even, linear rows odd
    offs_j = tl.arange(0, BLOCK_K // 2)  # byte columns of one K step
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_l = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, C, BLOCK_K):
        if MX_DOT:  # bf16/fp16 x: tl.dot_scaled decodes the packed codes in the dot operand's own layout
            offs_k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + tok[:, None] * C + offs_k[None, :], mask=mask_m[:, None] & (offs_k < C)[None, :],
                        other=0.0)
            g_codes, g_scales = load_mx(w_ptr, s_ptr, row_g, mask_i, k0, C, BLOCK_K)
            acc_g = tl.dot_scaled(x, None, FMT, g_codes, g_scales, "e2m1", acc_g)
            l_codes, l_scales = load_mx(w_ptr, s_ptr, row_g + 1, mask_i, k0, C, BLOCK_K)
            acc_l = tl.dot_scaled(x, None, FMT, l_codes, l_scales, "e2m1", acc_l)
        else:
            kb = k0 // 2 + offs_j
            mask_k = kb < C // 2
            mx = mask_m[:, None] & mask_k[None, :]
            x_even = tl.load(x_ptr + tok[:, None] * C + 2 * kb[None, :], mask=mx, other=0.0)
            x_odd = tl.load(x_ptr + tok[:, None] * C + 2 * kb[None, :] + 1, mask=mx, other=0.0)
            g_lo, g_hi = load_fp4_t(w_ptr, s_ptr, row_g, mask_i, kb, mask_k, C // 2, DT)
            acc_g = dot(x_even, g_lo, acc_g, IEEE)
            acc_g = dot(x_odd, g_hi, acc_g, IEEE)
            l_lo, l_hi = load_fp4_t(w_ptr, s_ptr, row_g + 1, mask_i, kb, mask_k, C // 2, DT)
            acc_l = dot(x_even, l_lo, acc_l, IEEE)
            acc_l = dot(x_odd, l_hi, acc_l, IEEE)
    gate = acc_g + tl.load(b_ptr + row_g, mask=mask_i, other=0.0).to(tl.float32)[None, :]
    lin = acc_l + tl.load(b_ptr + row_g + 1, mask=mask_i, other=0.0).to(tl.float32)[None, :]
    gate = tl.minimum(gate, limit)  # quirk: gate clamped above only
    lin = tl.minimum(tl.maximum(lin, -limit), limit)
    h = gate / (1.0 + tl.exp(-ALPHA * gate)) * (lin + 1.0)  # quirk: +1 on the linear half
    tl.store(h_ptr + offs_m[:, None].to(tl.int64) * I + offs_i[None, :], h.to(DT),
             mask=mask_m[:, None] & mask_i[None, :])


@triton.jit
def _moe_down_kernel(h_ptr, pair_ptr, weights_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr,
                     w_ptr, s_ptr, b_ptr, y_ptr,
                     A: tl.constexpr, C: tl.constexpr, I: tl.constexpr, IEEE: tl.constexpr,
                     MX_DOT: tl.constexpr, FMT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    start, stop, e = tile_of(tile_expert_ptr, tile_start_ptr, tile_stop_ptr)
    if start >= stop:
        return
    DT = h_ptr.dtype.element_ty
    offs_m = start + tl.arange(0, BLOCK_M)
    mask_m = offs_m < stop
    pair = tl.load(pair_ptr + offs_m, mask=mask_m, other=0)
    route_w = tl.load(weights_ptr + pair, mask=mask_m, other=0.0)
    offs_c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < C
    rows = e * C + offs_c
    offs_j = tl.arange(0, BLOCK_K // 2)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    h_row = h_ptr + offs_m[:, None].to(tl.int64) * I
    for k0 in range(0, I, BLOCK_K):
        if MX_DOT:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            hk = tl.load(h_row + offs_k[None, :], mask=mask_m[:, None] & (offs_k < I)[None, :], other=0.0)
            codes, scales = load_mx(w_ptr, s_ptr, rows, mask_c, k0, I, BLOCK_K)
            acc = tl.dot_scaled(hk, None, FMT, codes, scales, "e2m1", acc)
        else:
            kb = k0 // 2 + offs_j
            mask_k = kb < I // 2
            mh = mask_m[:, None] & mask_k[None, :]
            h_even = tl.load(h_row + 2 * kb[None, :], mask=mh, other=0.0)
            h_odd = tl.load(h_row + 2 * kb[None, :] + 1, mask=mh, other=0.0)
            w_lo, w_hi = load_fp4_t(w_ptr, s_ptr, rows, mask_c, kb, mask_k, I // 2, DT)
            acc = dot(h_even, w_lo, acc, IEEE)
            acc = dot(h_odd, w_hi, acc, IEEE)
    y = acc + tl.load(b_ptr + rows, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    y = y * route_w[:, None]  # expert bias added before the routing weight, as in the reference
    # one row per (token, slot) pair, written exactly once: no zero-fill, no atomics; _sum_kernel adds the A rows
    tl.store(y_ptr + pair[:, None].to(tl.int64) * C + offs_c[None, :], y, mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def _sum_kernel(y_ptr, res_ptr, out_ptr, C, A: tl.constexpr, HAS_RES: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[n] = [res[n] +] sum over the A slots of y[n*A + j], in a fixed order (deterministic), rounded to out's
    dtype (HAS_RES: the block's residual add, rounded as torch's x + y on the rounded sum)."""
    n = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs_c < C
    acc = tl.zeros([BLOCK_C], tl.float32)
    for j in tl.static_range(A):
        acc += tl.load(y_ptr + (n * A + j) * C + offs_c, mask=mask, other=0.0)
    y = round_add(acc, res_ptr + n * C + offs_c, mask, HAS_RES, out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * C + offs_c, y, mask=mask)

