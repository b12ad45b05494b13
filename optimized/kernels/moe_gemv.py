"""The MoE experts at small batches (kernels/moe.py `plan`: batch 1 always): two GEMV kernels, one (token, slot)
pair a tile, fp32 FMAs on FP4 codes decoded from uint32 words (kernels/mxfp4.py `mx_gemv_block`), no tensor cores.

Mirrors reference/moe.py (swiglu, the expert loop of moe_block). At batch 1 each routed expert receives exactly one
token, so a tensor-core tile of 16 rows would be 15/16 padding, and what bounds the kernel is not the MMA but the
instructions that decode FP4. x (and h between the two) comes pre-scaled in fp32 and code-major (gemv_x_ref;
moe_group.py's grouping writes x so, in the launch it makes anyway), so code j of 4 words meets 4 floats in one
16-byte load, with no conversion or multiply per element; no masks in the main K loop. The down kernel runs per
(token, block of C rows) and reads the token's A experts in each K step, h arriving already times the routing
weight: the weighted sum over the k experts (and the residual add) happen in its epilogue, so a batch-1 MoE is 3
launches (group, up, down). Why these kernels, and their instruction counts: optimized/README.md "Triton MoE",
BENCHMARKS.md "Static bound".
Quirks, each where it happens below: mlp1's rows interleave gate (even) and linear (odd); SwiGLU: gate clamped
above only, linear clamped both ways, gate * sigmoid(1.702 gate) * (linear + 1); the expert bias before the
routing weight.

Legend: N tokens, A experts per token, P = N*A (token, slot) pairs, E experts, C hidden, I intermediate.
"""
import torch
import triton
import triton.language as tl

from optimized.kernels.moe_group import tile_of
from optimized.kernels.mxfp4 import X_PRESCALE, mx_gemv_block
from optimized.kernels.pdl import _pdl_enter, launch_args
from optimized.kernels.rounding import round_add
from reference.moe import SWIGLU_ALPHA

TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def moe_gemv(x, ids, weights, grouping, xs, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float,
             residual, cfg):
    """The two GEMV launches after a grouping with tiles of 1 row (order, tile_expert, tile_start, tile_stop) and
    x laid out in xs (gemv_x_ref): x (N, C), ids int (N, A), weights fp32 (N, A), the packed experts, residual
    (N, C) or None -> (N, C) in x's dtype."""
    N, C = x.shape
    A, I = ids.shape[1], w1_blocks.shape[1] // 2
    order, tile_expert, tile_start, tile_stop = grouping
    h = torch.empty((N * A, 8, I // 8), dtype=torch.float32, device=x.device)  # as gemv_x_ref lays out x
    out = torch.empty_like(x)
    res = residual.contiguous() if residual is not None else x  # x: a placeholder pointer when HAS_RES is off
    launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **launch_args(x.device))
    _moe_up_gemv_kernel[(tile_expert.numel(), triton.cdiv(I, cfg["BLOCK_N_UP"]))](
        xs, order, weights, tile_expert, tile_start, tile_stop, w1_blocks.view(torch.int32), w1_scales, b1, h,
        float(limit), SWIGLU_ALPHA, A=A, C=C, I=I, H_DTYPE=TL_DTYPES[x.dtype], BLOCK_N=cfg["BLOCK_N_UP"],
        BLOCK_K=cfg["BLOCK_K"], **launch)
    _moe_down_gemv_kernel[(N, triton.cdiv(C, cfg["BLOCK_N_DOWN"]))](  # the sum over slots in the same pass
        h, ids, weights, w2_blocks.view(torch.int32), w2_scales, b2, res, out, A=A, C=C, I=I,
        HAS_RES=residual is not None, BLOCK_N=cfg["BLOCK_N_DOWN"], BLOCK_K=cfg["BLOCK_K"], **launch)
    return out


@triton.jit
def _moe_up_gemv_kernel(xs_ptr, pair_ptr, weights_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr,
                        w_ptr, s_ptr, b_ptr, h_ptr, limit, ALPHA: tl.constexpr,
                        A: tl.constexpr, C: tl.constexpr, I: tl.constexpr, H_DTYPE: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """_moe_up_kernel for tiles of one (token, slot) pair (small-batch decode): fp32 FMAs instead of a tensor-core
    dot padded to 16 rows, the codes decoded by fp4_pair. w_ptr: the packed codes as int32 words; xs_ptr: x as
    gemv_x_ref lays it out (N, 8, C//8); h_ptr: h times the routing weight in the same layout, (P, 8, I//8), row
    n * A + j for token n's slot j, for _moe_down_gemv_kernel. PDL: pdl.py."""
    _pdl_enter(PDL)
    start, stop, e = tile_of(tile_expert_ptr, tile_start_ptr, tile_stop_ptr)
    if start >= stop:
        return
    pair = tl.load(pair_ptr + start)
    route_w = tl.load(weights_ptr + pair)
    tok = (pair // A).to(tl.int64)
    offs_i = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_i = offs_i < I
    row_g = e * (2 * I) + 2 * offs_i  # quirk: gate rows are even, linear rows odd
    acc_g = tl.zeros([BLOCK_N], tl.float32)
    acc_l = tl.zeros([BLOCK_N], tl.float32)
    MASK_R: tl.constexpr = I % BLOCK_N != 0
    K_FULL: tl.constexpr = C - C % BLOCK_K  # whole steps without a K mask, then the tail with one
    for k0 in range(0, K_FULL, BLOCK_K):
        acc_g += mx_gemv_block(w_ptr, s_ptr, row_g, mask_i, xs_ptr + tok * C, k0, C, BLOCK_K, False, MASK_R)
        acc_l += mx_gemv_block(w_ptr, s_ptr, row_g + 1, mask_i, xs_ptr + tok * C, k0, C, BLOCK_K, False, MASK_R)
    if K_FULL < C:
        acc_g += mx_gemv_block(w_ptr, s_ptr, row_g, mask_i, xs_ptr + tok * C, K_FULL, C, BLOCK_K, True, True)
        acc_l += mx_gemv_block(w_ptr, s_ptr, row_g + 1, mask_i, xs_ptr + tok * C, K_FULL, C, BLOCK_K, True, True)
    gate = acc_g + tl.load(b_ptr + row_g, mask=mask_i, other=0.0).to(tl.float32)
    lin = acc_l + tl.load(b_ptr + row_g + 1, mask=mask_i, other=0.0).to(tl.float32)
    gate = tl.minimum(gate, limit)  # quirk: gate clamped above only
    lin = tl.minimum(tl.maximum(lin, -limit), limit)
    h = gate / (1.0 + tl.exp(-ALPHA * gate)) * (lin + 1.0)  # quirk: +1 on the linear half
    # h rounded to x's dtype (as the other paths keep it), times the routing weight (so the down kernel sums its A
    # experts in one accumulator: w * (W2 h + b2) = W2 (w h) + w b2), handed over as the down kernel reads x: fp32,
    # scaled, code-major (h[i] at j = i % 8, w = i // 8), in the row of its pair (token n, slot j: n * A + j)
    h = h.to(H_DTYPE).to(tl.float32) * route_w * X_PRESCALE
    tl.store(h_ptr + pair.to(tl.int64) * I + (offs_i % 8) * (I // 8) + offs_i // 8, h, mask=mask_i)


@triton.jit
def _moe_down_gemv_kernel(h_ptr, ids_ptr, weights_ptr, w_ptr, s_ptr, b_ptr, res_ptr, out_ptr,
                          A: tl.constexpr, C: tl.constexpr, I: tl.constexpr, HAS_RES: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """Per (token n, block of C rows): out[n] = [res[n] +] sum over n's A slots of w_j * (W2[e_j] h_j + b2[e_j]),
    rounded to out's dtype: the down-projection, the routing weight and the sum over the k experts in one pass
    (no (P, C) fp32 rows, no _sum_kernel launch). h as _moe_up_gemv_kernel writes it (already times w_j), so the A
    experts share one accumulator; each K step reads all A experts' rows (A matrices' loads in flight a program,
    as many bytes as the A programs a pair had before). The slots are added in a fixed order: deterministic.
    HAS_RES: the block's residual add too, rounded as torch's x + y (y rounded to out's dtype first). PDL: pdl.py."""
    _pdl_enter(PDL)
    n = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < C
    acc = tl.zeros([BLOCK_N], tl.float32)
    MASK_R: tl.constexpr = C % BLOCK_N != 0
    K_FULL: tl.constexpr = I - I % BLOCK_K
    for k0 in range(0, K_FULL, BLOCK_K):
        for j in tl.static_range(A):
            rows = tl.load(ids_ptr + n * A + j).to(tl.int32) * C + offs_c
            acc += mx_gemv_block(w_ptr, s_ptr, rows, mask_c, h_ptr + (n * A + j) * I, k0, I, BLOCK_K, False, MASK_R)
    bias = tl.zeros([BLOCK_N], tl.float32)
    for j in tl.static_range(A):
        rows = tl.load(ids_ptr + n * A + j).to(tl.int32) * C + offs_c
        if K_FULL < I:
            acc += mx_gemv_block(w_ptr, s_ptr, rows, mask_c, h_ptr + (n * A + j) * I, K_FULL, I, BLOCK_K, True, True)
        # the expert bias, before the routing weight as in the reference: w * (W2 h + b2) = W2 (w h) + w b2
        bias += tl.load(weights_ptr + n * A + j) * tl.load(b_ptr + rows, mask=mask_c, other=0.0).to(tl.float32)
    y = round_add(acc + bias, res_ptr + n * C + offs_c, mask_c, HAS_RES, out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * C + offs_c, y, mask=mask_c)

