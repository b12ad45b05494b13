"""gpt-oss MoE experts as Triton kernels that read the packed MXFP4 weights directly (never a bf16 copy).

Mirrors reference/moe.py (swiglu, the expert loop of moe_block) and reference/mxfp4.py (decode); the seam is
optimized/ops.py `moe`. What it does, in order (no host sync anywhere, static shapes: CUDA-graph capturable):
  1. group the N*A (token, slot) pairs by expert on the device and cut each expert's run into tiles of
     BLOCK_M rows (`_group_kernel` in decode; a stable sort plus searchsorted in torch for prefill);
  2. `_moe_up_kernel`: per (tile, block of I columns), h = swiglu(x @ W1[e].T + b1[e]), the FP4 codes
     decoded in registers and the SwiGLU in the epilogue;
  3. `_moe_down_kernel`: per (tile, block of C columns), y = (h @ W2[e].T + b2[e]) * routing weight, one fp32
     row per (token, slot) pair; `_sum_kernel` adds each token's A rows in a fixed order, rounds to x's
     dtype and, given the block's residual, adds it (the launch the residual add would take anyway). Chosen
     over atomic adds into a zeroed fp32 (N, C): the result is bitwise reproducible (atomics make the order of
     the <= 4 fp32 terms run-dependent), and it costs no more launches (atomics need a zero-fill and a final
     cast). Small batches have no such pass: their down kernel (below) sums a token's A experts itself.
In the decode regime the grouping of step 1 is one small kernel (`_group_kernel`) instead of a dozen torch
ops: at batch 1 a layer's routed experts take ~12 us to read at HBM speed, so launches matter.
Decode (N <= 64) uses BLOCK_M = 16: every routed expert's bytes are read once per 16 tokens it receives
(once, at batch 1), and the parallelism comes from experts x column blocks. Prefill uses BLOCK_M = 64
tensor-core tiles (128 in bf16/fp16). Both regimes are the same kernels with different tile sizes. With bf16/fp16
x the K step is `tl.dot_scaled` on the packed codes and E8M0 scales (`MX_DOT`: Triton decodes in the dot operand's
registers; fp32 x keeps the decode + `tl.dot` below, in IEEE fp32).
Small batches (`gemv_pays`: batch 1 always) have their own two kernels, `_moe_up_gemv_kernel` and
`_moe_down_gemv_kernel`: at batch 1 each routed expert receives exactly one token, so a tensor-core tile of 16
rows would be 15/16 padding, and what bounds the kernel is not the MMA but the instructions that decode FP4 (a
Hopper SM issues 4 warp-instructions a cycle against ~18-25 bytes a cycle of HBM share). They read the codes as
int32 words, decode them two at a time in 5 integer ops with no select (`_fp4_pair`: codes j and j + 4 of a
word as fp32 equal to fp4 * 2**-126, subnormals included, by a masked multiply each) and multiply in fp32 FMAs,
the E8M0 scale applied once per 32 values. x (and h between the two) comes pre-scaled in fp32 and code-major
(`gemv_x_ref`; `_group_kernel` writes x so, in the launch it makes anyway), so code j of 4 words meets 4 floats
in one 16-byte load, with no conversion or multiply per element; no masks in the main K loop. The down kernel
runs per (token, block of C rows) and reads the token's A experts in each K step, h arriving already times the
routing weight: the weighted sum over the k experts (and the residual add) happen in its epilogue, so a batch-1
MoE is 3 launches (group, up, down), where it was 4 plus the RMSNorm before and the residual add after.
By the SASS count of bench/sass_roofline.py (triton 3.6, sm_90): 0.26 / 0.30 warp-instructions per weight byte
(up / down) against 0.83 / 0.88 with tl.dot_scaled and 0.92 / 1.00 with the decode + tl.dot, i.e. issue-bound
ceilings of 1.00 / 0.95 of an H100's HBM bandwidth instead of 0.34 / 0.32 (H200: 0.75 / 0.66 instead of
0.24 / 0.23). Bounds, not measurements: bench/gpu.py --moe-sweep times the three paths on a GPU.
Weight layout: the release layout is used as is ((E, rows, C//32, 16) bytes, i.e. each output row's
codes are contiguous along the reduction axis, which is what a coalesced load wants), so there is no
load-time re-layout and no `prepare_moe_weights`.
The block's RMSNorm before and residual add after are here when the caller passes norm_scale and the residual: at
small batches the grouping kernel normalizes x as it lays it out for the GEMV kernels and the down kernel adds the
residual; otherwise the RMSNorm kernel runs first and the sum kernel adds the residual. `routed_moe` (what
optimized/moe.py's moe_block calls with this backend) takes the router too: at small batches `_moe_router_kernel`
computes the router logits (norm, bias) and its last program to finish routes (route.py's top-k), groups and lays
x out, so the whole block is 3 launches (router, up, down); larger batches run linear, route and moe in turn.

Quirks, each where it happens below:
  - MXFP4: LOW nibble first (element 2j of a block is byte j & 0xF); value = fp4 * 2**(scale - 127).
  - mlp1's rows interleave gate (even) and linear (odd).
  - SwiGLU: gate clamped above only, linear clamped both ways, gate * sigmoid(1.702 gate) * (linear + 1).
The low-nibble-first quirk is used to avoid any interleave in registers: the low nibbles of a row's bytes
are its even-indexed weights, so x is loaded as its even and odd columns and each K step is two dots.

Legend: N tokens, A experts per token, P = N*A (token, slot) pairs, E experts, C hidden, I intermediate.
"""
import os

import torch
import triton
import triton.language as tl

from optimized.kernels.grid_sync import _last_to_arrive, counters
from optimized.kernels.linear import LINEAR_CONFIG, LINEAR_MAX_ROWS, _block_o, _inv_rms, _project_rows, _round_add
from optimized.kernels.linear import linear as project_linear
from optimized.kernels.pdl import _pdl_enter, _prefetch_rows, launch_args
from optimized.kernels.rms_norm import rms_norm
from optimized.kernels.route import _top_k_softmax
from optimized.kernels.route import route as route_op
from reference.norm import EPS

SWIGLU_ALPHA = 1.702  # a constant of the model, not in config.json (as in reference/moe.py)
# the GEMV kernels (_fp4_pair): x * 2**64 times fp4 * 2**-126 is a normal fp32 for |fp4 * x| >= 2**-62 (smaller
# products keep fewer bits, as subnormals), and 2**(126 - 64) restores each block's sum before its scale; x would
# overflow only beyond 2**64
X_PRESCALE = tl.constexpr(2.0 ** 64)
UNDO_PRESCALE = tl.constexpr(2.0 ** 62)
C_BLOCK_X = tl.constexpr(1024)  # features a step when the grouping lays x out
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


# ----------------------------------------------------------------------------------------------- references
def mxfp4_dequant_ref(blocks: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """blocks uint8 (..., B, 16), scales uint8 (..., B) -> (..., B*32) in dtype."""
    *lead, B, half = blocks.shape
    assert half == 16 and tuple(scales.shape) == (*lead, B), (blocks.shape, scales.shape)
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).long()  # quirk: low nibble is the earlier element
    s = scales.to(torch.int32)
    mult = torch.ldexp(torch.ones_like(s, dtype=torch.float32), s - 127)
    mult = torch.where(s == 0xFF, torch.nan, mult)  # E8M0 0xFF is NaN
    return (lut[codes].reshape(*lead, B, 32) * mult[..., None]).reshape(*lead, B * 32).to(dtype)


def swiglu_ref(h: torch.Tensor, limit: float) -> torch.Tensor:
    """h (..., 2I) interleaved gate/linear -> (..., I)."""
    gate, linear = h[..., 0::2], h[..., 1::2]
    gate = gate.clamp(max=limit)
    linear = linear.clamp(-limit, limit)
    return gate * torch.sigmoid(SWIGLU_ALPHA * gate) * (linear + 1)


def moe_ref(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float, residual=None,
            norm_scale=None):
    """Plain torch, one expert at a time, matmuls in x's dtype, the sum over k in fp32. Same signature as moe."""
    if norm_scale is not None:  # norm.py's torch RMSNorm (fp32, rounded to x's dtype)
        x = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), norm_scale.float(), EPS).to(x.dtype)
    N, C = x.shape
    A = ids.shape[1]
    E, I2 = b1.shape
    assert ids.shape == weights.shape == (N, A) and b2.shape == (E, C)
    out = torch.zeros((N, C), dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        rows, slot = torch.nonzero(ids == e, as_tuple=True)
        W1 = mxfp4_dequant_ref(w1_blocks[e], w1_scales[e], x.dtype)  # (2I, C)
        W2 = mxfp4_dequant_ref(w2_blocks[e], w2_scales[e], x.dtype)  # (C, I)
        h = swiglu_ref(x[rows] @ W1.T + b1[e].to(x.dtype), limit)  # (n, I)
        y = h @ W2.T + b2[e].to(x.dtype)  # (n, C)
        out.index_add_(0, rows, weights[rows, slot].float()[:, None] * y.float())
    return out.to(x.dtype) if residual is None else residual + out.to(x.dtype)


# ------------------------------------------------------------------------------------------------- kernels
@triton.jit
def _fp4_to_f32(c):
    """FP4 E2M1 codes (int32, 0..15) -> fp32. Magnitudes >= 1 are built as fp32 bits: exponent e-1, mantissa m."""
    c3 = c & 7  # e = c3 >> 1, m = c3 & 1
    normal = ((c3 + 252) << 22).to(tl.float32, bitcast=True)  # (e + 126) << 23 | m << 22 == (c3 + 252) << 22
    mag = tl.where(c3 >= 2, normal, c3.to(tl.float32) * 0.5)  # e == 0: zero or the subnormal 0.5
    return tl.where((c & 8) != 0, -mag, mag)


@triton.jit
def _e8m0(s):
    """E8M0 scale bytes (int32) -> fp32 2**(s - 127): the exponent field as is for s in 1..254, the subnormal
    2**-127 for s == 0, NaN for s == 255."""
    scale = (s << 23).to(tl.float32, bitcast=True)
    scale = tl.where(s == 0, 5.877471754111438e-39, scale)  # 2**-127 is an fp32 subnormal
    return tl.where(s == 255, float("nan"), scale)  # E8M0 0xFF is NaN


@triton.jit
def _load_fp4_t(w_ptr, s_ptr, rows, mask_r, kb, mask_kb, ROW_BYTES: tl.constexpr, DT: tl.constexpr):
    """Rows (R,) int64 of a (rows, ROW_BYTES) code matrix, byte columns kb (HALF,) -> decoded weights
    transposed, as (lo, hi) each (HALF, R) in DT: lo holds the even K indices, hi the odd ones."""
    m = mask_kb[:, None] & mask_r[None, :]
    byte = tl.load(w_ptr + rows[None, :] * ROW_BYTES + kb[:, None], mask=m, other=0).to(tl.int32)
    # one E8M0 scale per 16 bytes (32 values); the repeated addresses are served by the cache
    s = tl.load(s_ptr + rows[None, :] * (ROW_BYTES // 16) + (kb // 16)[:, None], mask=m, other=127).to(tl.int32)
    scale = _e8m0(s)
    lo = _fp4_to_f32(byte & 15) * scale  # quirk: low nibble = even element
    hi = _fp4_to_f32(byte >> 4) * scale
    return lo.to(DT), hi.to(DT)


@triton.jit
def _load_mx(w_ptr, s_ptr, rows, mask_r, k0, K: tl.constexpr, BLOCK_K: tl.constexpr):
    """tl.dot_scaled's operands: rows (R,) int64 of a (rows, K//2) code matrix, the K columns k0..k0+BLOCK_K ->
    the packed codes transposed, (BLOCK_K//2, R) uint8, and the scales, (R, BLOCK_K//32) uint8 (dot_scaled
    takes rhs scales untransposed). Nothing is decoded here: dot_scaled's e2m1 packing is the release's (two K
    values a byte, the earlier in the low nibble), its scales are E8M0 over 32 K values, as the release's."""
    kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    ks = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    codes = tl.load(w_ptr + rows[None, :] * (K // 2) + kb[:, None], mask=(kb < K // 2)[:, None] & mask_r[None, :],
                    other=0)  # byte 0: two +0 codes
    scales = tl.load(s_ptr + rows[:, None] * (K // 32) + ks[None, :], mask=mask_r[:, None] & (ks < K // 32)[None, :],
                     other=127)
    return codes, scales


@triton.jit
def _tile(tile_expert_ptr, tile_start_ptr, tile_stop_ptr):
    """This program's tile (program_id 0): its first and one-past-last row in the sorted pair order, and its expert.
    start == stop: a spare tile of the static grid (the caller returns)."""
    tile = tl.program_id(0)
    e = tl.load(tile_expert_ptr + tile).to(tl.int64)
    return tl.load(tile_start_ptr + tile), tl.load(tile_stop_ptr + tile), e


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr):
    if IEEE:  # fp32 inputs: exact fp32 products (the default would be tf32 on a GPU)
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _moe_up_kernel(x_ptr, pair_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr,
                   w_ptr, s_ptr, b_ptr, h_ptr, limit, ALPHA: tl.constexpr,
                   A: tl.constexpr, C: tl.constexpr, I: tl.constexpr, IEEE: tl.constexpr,
                   MX_DOT: tl.constexpr, FMT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    start, stop, e = _tile(tile_expert_ptr, tile_start_ptr, tile_stop_ptr)
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
            g_codes, g_scales = _load_mx(w_ptr, s_ptr, row_g, mask_i, k0, C, BLOCK_K)
            acc_g = tl.dot_scaled(x, None, FMT, g_codes, g_scales, "e2m1", acc_g)
            l_codes, l_scales = _load_mx(w_ptr, s_ptr, row_g + 1, mask_i, k0, C, BLOCK_K)
            acc_l = tl.dot_scaled(x, None, FMT, l_codes, l_scales, "e2m1", acc_l)
        else:
            kb = k0 // 2 + offs_j
            mask_k = kb < C // 2
            mx = mask_m[:, None] & mask_k[None, :]
            x_even = tl.load(x_ptr + tok[:, None] * C + 2 * kb[None, :], mask=mx, other=0.0)
            x_odd = tl.load(x_ptr + tok[:, None] * C + 2 * kb[None, :] + 1, mask=mx, other=0.0)
            g_lo, g_hi = _load_fp4_t(w_ptr, s_ptr, row_g, mask_i, kb, mask_k, C // 2, DT)
            acc_g = _dot(x_even, g_lo, acc_g, IEEE)
            acc_g = _dot(x_odd, g_hi, acc_g, IEEE)
            l_lo, l_hi = _load_fp4_t(w_ptr, s_ptr, row_g + 1, mask_i, kb, mask_k, C // 2, DT)
            acc_l = _dot(x_even, l_lo, acc_l, IEEE)
            acc_l = _dot(x_odd, l_hi, acc_l, IEEE)
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
    start, stop, e = _tile(tile_expert_ptr, tile_start_ptr, tile_stop_ptr)
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
            codes, scales = _load_mx(w_ptr, s_ptr, rows, mask_c, k0, I, BLOCK_K)
            acc = tl.dot_scaled(hk, None, FMT, codes, scales, "e2m1", acc)
        else:
            kb = k0 // 2 + offs_j
            mask_k = kb < I // 2
            mh = mask_m[:, None] & mask_k[None, :]
            h_even = tl.load(h_row + 2 * kb[None, :], mask=mh, other=0.0)
            h_odd = tl.load(h_row + 2 * kb[None, :] + 1, mask=mh, other=0.0)
            w_lo, w_hi = _load_fp4_t(w_ptr, s_ptr, rows, mask_c, kb, mask_k, I // 2, DT)
            acc = _dot(h_even, w_lo, acc, IEEE)
            acc = _dot(h_odd, w_hi, acc, IEEE)
    y = acc + tl.load(b_ptr + rows, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    y = y * route_w[:, None]  # expert bias added before the routing weight, as in the reference
    # one row per (token, slot) pair, written exactly once: no zero-fill, no atomics; _sum_kernel adds the A rows
    tl.store(y_ptr + pair[:, None].to(tl.int64) * C + offs_c[None, :], y, mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def _fp4_pair(words, j: tl.constexpr):
    """Codes j and j + 4 (j = 0..3) of uint32 words of packed FP4 (8 codes a word, the earlier in the lower nibble:
    the release's bytes read little-endian) as two fp32 tensors equal to fp4 * 2**-126, in 5 integer ops for the
    two (and a shift a word for j >= 2) and no select. Each fp32 wants its code's e1 e0 m at bits 24..22 and its
    sign at 31: then its exponent field is e and its mantissa m, i.e. 2**(e-127) * (1 + m/2) = fp4 * 2**-126 for
    e >= 1 and the subnormal m * 2**-127 = fp4 * 2**-126 for e == 0 (0.5 is code 1). The two codes, 16 bits apart,
    are masked out of the word, then one multiply by 2**a + 2**b writes each twice, shifted by a (the magnitude's
    place) and by b (the sign's), into bits that do not overlap (no carries): times (2**a + 2**b) << 16 for code
    j, whose partner overflows past bit 31; times 2**a + 2**b for code j + 4, whose partner stays below bit 16.
    A mask keeps the four bits. Needs subnormals kept, not flushed: Triton emits no .ftz (tests/test_kernels_compile.py
    checks the PTX)."""
    if j >= 2:  # codes 2, 3 (6, 7) moved down to where codes 0, 1 (4, 5) sit; the shift is shared by j = 2 and 3
        words = words >> 8
    jj: tl.constexpr = j % 2
    t = words & (0x000F000F << (4 * jj))  # code jj at bits 4jj..4jj+3, code jj + 4 16 bits up
    MUL: tl.constexpr = (1 << (6 - 4 * jj)) + (1 << (12 - 4 * jj))  # e1 e0 m -> 8..6 of its half, sign -> 15
    lo = ((t * (MUL << 16)) & 0x81C00000).to(tl.float32, bitcast=True)  # code j
    hi = ((t * MUL) & 0x81C00000).to(tl.float32, bitcast=True)  # code j + 4
    return lo, hi


@triton.jit
def _mx_gemv_block(w_ptr, s_ptr, rows, mask_r, xs_ptr, k0, K: tl.constexpr, BLOCK_K: tl.constexpr,
                   MASK_K: tl.constexpr, MASK_R: tl.constexpr):
    """One K step of rows . x for one token: rows (R,) of a (rows, K//2) code matrix read as uint32 words; xs_ptr
    the token's x as gemv_x_ref lays it out (fp32, times X_PRESCALE, code-major: xs[j, w] = x[8w + j], so code j
    of 4 consecutive words meets 4 consecutive floats: one 16-byte load, no conversion, no multiply).
    Returns (R,) fp32: sum over k0..k0+BLOCK_K of W[r, k] x[k]. MASK_K: the step may pass K (the tail);
    MASK_R: rows may pass the matrix. Each mask costs instructions in the loop (predicates, zeroed registers),
    so the kernels ask for them only where they can be needed.
    Layout: (R, BLOCK_K//32 blocks, 4 words) so each thread's words of a block are contiguous (one 16-byte load)
    and the block's partial sums stay in registers until its E8M0 scale multiplies them."""
    NB: tl.constexpr = BLOCK_K // 32
    b = k0 // 32 + tl.arange(0, NB)
    q = tl.arange(0, 4)
    word = b[:, None] * 4 + q[None, :]  # (NB, 4) word index within the row
    ok = (b < K // 32)[:, None] & (q < 4)[None, :]
    w_at = w_ptr + rows[:, None, None] * (K // 8) + word[None, :, :]
    s_at = s_ptr + rows[:, None] * (K // 32) + b[None, :]
    if MASK_K:
        m_w = mask_r[:, None, None] & ok[None, :, :]
        words = tl.load(w_at, mask=m_w, other=0)
        s = tl.load(s_at, mask=mask_r[:, None] & (b < K // 32)[None, :], other=127)
    elif MASK_R:
        words = tl.load(w_at, mask=mask_r[:, None, None], other=0)
        s = tl.load(s_at, mask=mask_r[:, None], other=127)
    else:
        words = tl.load(w_at)
        s = tl.load(s_at)
    words = words.to(tl.uint32, bitcast=True)
    s = s.to(tl.int32)
    part = tl.zeros(words.shape, tl.float32)
    for j in tl.static_range(4):  # code j of each word is k = 8 * word + j
        lo, hi = _fp4_pair(words, j)
        if MASK_K:
            x_lo = tl.load(xs_ptr + j * (K // 8) + word, mask=ok, other=0.0)
            x_hi = tl.load(xs_ptr + (j + 4) * (K // 8) + word, mask=ok, other=0.0)
        else:
            x_lo = tl.load(xs_ptr + j * (K // 8) + word)
            x_hi = tl.load(xs_ptr + (j + 4) * (K // 8) + word)
        part += lo * x_lo[None, :, :]
        part += hi * x_hi[None, :, :]
    scale = _e8m0(s)
    # undo the 2**-126 of _fp4_pair and the X_PRESCALE of x: 2**(126 - 64) = 2**62, then the block's scale
    return tl.sum(tl.sum(part, axis=2) * UNDO_PRESCALE * scale, axis=1)


@triton.jit
def _moe_up_gemv_kernel(xs_ptr, pair_ptr, weights_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr,
                        w_ptr, s_ptr, b_ptr, h_ptr, limit, ALPHA: tl.constexpr,
                        A: tl.constexpr, C: tl.constexpr, I: tl.constexpr, H_DTYPE: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """_moe_up_kernel for tiles of one (token, slot) pair (small-batch decode): fp32 FMAs instead of a tensor-core
    dot padded to 16 rows, the codes decoded by _fp4_pair. w_ptr: the packed codes as int32 words; xs_ptr: x as
    gemv_x_ref lays it out (N, 8, C//8); h_ptr: h times the routing weight in the same layout, (P, 8, I//8), row
    n * A + j for token n's slot j, for _moe_down_gemv_kernel. PDL: pdl.py."""
    _pdl_enter(PDL)
    start, stop, e = _tile(tile_expert_ptr, tile_start_ptr, tile_stop_ptr)
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
        acc_g += _mx_gemv_block(w_ptr, s_ptr, row_g, mask_i, xs_ptr + tok * C, k0, C, BLOCK_K, False, MASK_R)
        acc_l += _mx_gemv_block(w_ptr, s_ptr, row_g + 1, mask_i, xs_ptr + tok * C, k0, C, BLOCK_K, False, MASK_R)
    if K_FULL < C:
        acc_g += _mx_gemv_block(w_ptr, s_ptr, row_g, mask_i, xs_ptr + tok * C, K_FULL, C, BLOCK_K, True, True)
        acc_l += _mx_gemv_block(w_ptr, s_ptr, row_g + 1, mask_i, xs_ptr + tok * C, K_FULL, C, BLOCK_K, True, True)
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
            acc += _mx_gemv_block(w_ptr, s_ptr, rows, mask_c, h_ptr + (n * A + j) * I, k0, I, BLOCK_K, False, MASK_R)
    bias = tl.zeros([BLOCK_N], tl.float32)
    for j in tl.static_range(A):
        rows = tl.load(ids_ptr + n * A + j).to(tl.int32) * C + offs_c
        if K_FULL < I:
            acc += _mx_gemv_block(w_ptr, s_ptr, rows, mask_c, h_ptr + (n * A + j) * I, K_FULL, I, BLOCK_K, True, True)
        # the expert bias, before the routing weight as in the reference: w * (W2 h + b2) = W2 (w h) + w b2
        bias += tl.load(weights_ptr + n * A + j) * tl.load(b_ptr + rows, mask=mask_c, other=0.0).to(tl.float32)
    y = _round_add(acc + bias, res_ptr + n * C + offs_c, mask_c, HAS_RES, out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * C + offs_c, y, mask=mask_c)


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
    y = _round_add(acc, res_ptr + n * C + offs_c, mask, HAS_RES, out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * C + offs_c, y, mask=mask)


@triton.jit
def _x_out(x_ptr, xs_ptr, scale_ptr, N_X, C, eps, NORM: tl.constexpr, BLOCK_C: tl.constexpr):
    """x's N_X rows of C as the GEMV kernels read them (gemv_x_ref); NORM: of rms_norm(x), as rms_norm.py computes
    it (fp32, t rounded to x's dtype)."""
    DT = x_ptr.dtype.element_ty
    for n in range(N_X):
        if NORM:
            r = _inv_rms(x_ptr + n * C, C, eps, BLOCK_C)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            v = tl.load(x_ptr + n * C + c, mask=c < C, other=0.0).to(tl.float32)
            if NORM:
                v = (v * r * tl.load(scale_ptr + c, mask=c < C, other=0.0)).to(DT).to(tl.float32)
            tl.store(xs_ptr + n * C + (c % 8) * (C // 8) + c // 8, v * X_PRESCALE, mask=c < C)


@triton.jit
def _group_tiles(ids, p, p_ok, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, n_tiles,
                 BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr):
    """The pairs p (ids: their experts) in a stable order by expert, and that order cut into tiles of BLOCK_M rows
    of one expert (group_by_expert's outputs)."""
    e = tl.arange(0, BLOCK_E)
    hit = (ids[None, :] == e[:, None]) & p_ok[None, :]  # (E, P): pair p routes to expert e
    counts = tl.sum(hit.to(tl.int32), axis=1)  # (E,)
    ends = tl.cumsum(counts, axis=0)
    starts = ends - counts
    earlier = (ids[:, None] == ids[None, :]) & (p[None, :] < p[:, None]) & p_ok[None, :]  # (P, P)
    rank = tl.sum(earlier.to(tl.int32), axis=1)  # pairs of the same expert before p: the sort is stable
    first = tl.sum(tl.where(hit, starts[:, None], 0), axis=0)  # (P,): starts[ids[p]]
    tl.store(order_ptr + first + rank, p, mask=p_ok)
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    tile_end = tl.cumsum(tiles, axis=0)
    tile_first = tile_end - tiles
    t = tl.arange(0, BLOCK_T)
    own = (tile_first[None, :] <= t[:, None]) & (t[:, None] < tile_end[None, :])  # (T, E): one True per used tile
    used = tl.sum(own.to(tl.int32), axis=1) > 0
    te = tl.sum(tl.where(own, e[None, :], 0), axis=1)
    start = tl.sum(tl.where(own, starts[None, :] - tile_first[None, :] * BLOCK_M, 0), axis=1) + t * BLOCK_M
    stop = tl.minimum(start + BLOCK_M, tl.sum(tl.where(own, ends[None, :], 0), axis=1))
    start = tl.where(used, start, 0)
    stop = tl.where(used, stop, 0)  # spare tiles: start == stop
    t_ok = t < n_tiles
    tl.store(tile_expert_ptr + t, te, mask=t_ok)
    tl.store(tile_start_ptr + t, start, mask=t_ok)
    tl.store(tile_stop_ptr + t, stop, mask=t_ok)


@triton.jit(debug=True)  # debug: keeps the device_assert below (a bad id must fail loudly, not drop silently)
def _group_kernel(ids_ptr, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, P, E, n_tiles,
                  x_ptr, xs_ptr, scale_ptr, N_X, C, eps,
                  BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr,
                  X_OUT: tl.constexpr, NORM: tl.constexpr, BLOCK_C: tl.constexpr):
    """group_by_expert in one program, for the decode regime (P <= 256 pairs): one launch instead of a dozen
    small torch ops. Same outputs as group_by_expert: a stable order by expert, and the tiles of BLOCK_M rows.
    X_OUT (small batches, gemv_pays): also x's N_X rows of C as the GEMV kernels read them (gemv_x_ref), saving
    them a launch. NORM: x is the block's input before its RMSNorm, applied here as rms_norm.py does (fp32, t
    rounded to x's dtype), saving the norm its launch too."""
    if X_OUT:
        _x_out(x_ptr, xs_ptr, scale_ptr, N_X, C, eps, NORM, BLOCK_C)
    p = tl.arange(0, BLOCK_P)
    p_ok = p < P
    ids = tl.load(ids_ptr + p, mask=p_ok, other=0).to(tl.int32)
    tl.device_assert((ids >= 0) & (ids < E), "moe: expert ids out of range")
    _group_tiles(ids, p, p_ok, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, n_tiles, BLOCK_M, BLOCK_E,
                 BLOCK_T)


@triton.jit
def _moe_router_kernel(x_ptr, gw_ptr, gb_ptr, scale_ptr, logits_ptr, cnt_ptr, ids_ptr, wts_ptr,
                       order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, xs_ptr, N, n_tiles, eps,
                       C: tl.constexpr, E: tl.constexpr, A: tl.constexpr, BLOCK_O: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_T: tl.constexpr, PDL: tl.constexpr):
    """At small batches, all of the MoE block before the expert kernels in one launch. Program (block of BLOCK_O
    experts, token n): those router logits, t @ gate.T + bias with t = rms_norm(x) (kernels/linear.py's rows),
    rounded to x's dtype as the torch linear rounds them. The last program to finish (grid_sync) then routes every
    token (route.py's top-k + softmax over the k chosen), groups the pairs by expert, one pair a tile (what
    _group_kernel does) and lays rms_norm(x) out for the GEMV kernels (_x_out)."""
    n = tl.program_id(1).to(tl.int64)
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < E
    _prefetch_rows(PDL, gw_ptr, offs_o, mask_o, C)  # PDL == 2: the gate's rows into L2 before the wait (pdl.py)
    _pdl_enter(PDL)  # PDL: pdl.py
    y = _project_rows(x_ptr, gw_ptr, gb_ptr, scale_ptr, n, offs_o, mask_o, eps, C, E, True, True, BLOCK_O, BLOCK_C)
    tl.store(logits_ptr + n * E + offs_o, y.to(logits_ptr.dtype.element_ty), mask=mask_o)
    if _last_to_arrive(cnt_ptr, tl.num_programs(0) * tl.num_programs(1)):
        offs_e = tl.arange(0, BLOCK_E)
        offs_a = tl.arange(0, BLOCK_A)
        for m in range(N):  # every token's logits, written by the other programs: .cg loads (never a stale L1 line)
            z = tl.load(logits_ptr + m * E + offs_e, mask=offs_e < E, other=float("-inf"), cache_modifier=".cg")
            ids, w = _top_k_softmax(z.to(tl.float32), E, A, BLOCK_E, BLOCK_A)
            tl.store(ids_ptr + m * A + offs_a, ids, mask=offs_a < A)
            tl.store(wts_ptr + m * A + offs_a, w, mask=offs_a < A)
        tl.debug_barrier()  # the ids this program's threads stored, read back below by others of its threads
        p = tl.arange(0, BLOCK_P)
        p_ok = p < N * A
        pair_ids = tl.load(ids_ptr + p, mask=p_ok, other=0)
        _group_tiles(pair_ids, p, p_ok, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, n_tiles, 1,
                     BLOCK_E, BLOCK_T)
        _x_out(x_ptr, xs_ptr, scale_ptr, N, C, eps, True, C_BLOCK_X)


@triton.jit
def _dequant_kernel(w_ptr, s_ptr, out_ptr, R, ROW_BYTES: tl.constexpr, BLOCK_R: tl.constexpr,
                    BLOCK_B: tl.constexpr):
    """The in-register decode of the MoE kernels on its own: (R, ROW_BYTES) codes -> (R, 2*ROW_BYTES)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < R
    kb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_kb = kb < ROW_BYTES
    lo, hi = _load_fp4_t(w_ptr, s_ptr, rows.to(tl.int64), mask_r, kb, mask_kb, ROW_BYTES,
                         out_ptr.dtype.element_ty)
    at = out_ptr + rows[None, :].to(tl.int64) * (2 * ROW_BYTES) + 2 * kb[:, None]
    m = mask_kb[:, None] & mask_r[None, :]
    tl.store(at, lo, mask=m)
    tl.store(at + 1, hi, mask=m)


# ------------------------------------------------------------------------------------------------- host side
DECODE_MAX_TOKENS = 64
# Set by reasoning, ptxas's register counts for sm_90 (no spills) and, for the batch-1 paths, by the SASS
# instruction counts of bench/sass_roofline.py; not yet by measurement: bench/gpu.py --moe-sweep times
# alternatives on a GPU. MX_DOT: tl.dot_scaled for bf16/fp16 x (0.83 vs 0.92 warp-instructions a byte, triton 3.6).
DECODE_CONFIG = dict(BLOCK_M=16, BLOCK_N_UP=32, BLOCK_N_DOWN=32, BLOCK_K=128, num_warps=4, num_stages=3, MX_DOT=True)
# prefill in bf16/fp16: 128-token tiles so each decoded weight feeds 128 rows of MMA. sm_90 SASS (triton 3.6,
# bench/sass_roofline.py --configs prefill): issue-bound at 0.94 / 0.77 (up / down) of the bf16 tensor-core rate,
# against 0.25 / 0.23 for 64 x 64 x 128 tiles; 234 / 210 registers, no spills. fp32 (the IEEE path, for
# conformance, not speed) keeps smaller tiles: it spills at any size, less at these.
PREFILL_CONFIG = dict(BLOCK_M=128, BLOCK_N_UP=128, BLOCK_N_DOWN=128, BLOCK_K=64, num_warps=8, num_stages=3,
                      MX_DOT=True)
PREFILL_CONFIG_FP32 = dict(BLOCK_M=64, BLOCK_N_UP=64, BLOCK_N_DOWN=64, BLOCK_K=128, num_warps=8, num_stages=3,
                           MX_DOT=False)
# The GEMV kernels (one (token, slot) pair a tile, no tensor cores) serve a call while its pairs are at most
# GEMV_PAIRS_PER_EXPERT times the distinct experts they are expected to touch (gemv_pays). At batch 1 every routed
# expert gets one token. With more tokens an expert routed twice is read twice (by two tiles running together, from
# L2 if it holds it), but at 0.28 instructions a byte against dot_scaled's 0.83 (bench/sass_roofline.py) the GEMV
# still issues less and, on an H100 where it is memory-bound, moves at most 2x the bytes of a kernel ~3x slower
# per byte (both are ~2.9x apart per byte: 2 leaves room for the model's error). gpt-oss-20b (32 experts): up to 12
# tokens (48 pairs, ~25 experts); 120b (128 experts): up to GEMV_MAX_TOKENS, which keeps the grouping kernel's
# tile count (pairs + experts) at most 128.
GEMV_MAX_TOKENS = 16
GEMV_PAIRS_PER_EXPERT = 2.0
# up: the lowest instructions a byte in bench/sass_roofline.py's candidates without spills (116 registers). down
# (a token's A experts a program): 8 rows, so a batch-1 grid is 360 programs (balance 0.91 over 132 SMs) instead
# of 180 (0.68): 0.299 warp-instructions a byte against 0.278 at 16 rows, ceiling 0.95 vs 0.77 of an H100's HBM
GEMV_CONFIG = dict(BLOCK_N_UP=16, BLOCK_N_DOWN=8, BLOCK_K=512, num_warps=4, num_stages=2)
TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
MX_DOT_FORMATS = {torch.bfloat16: "bf16", torch.float16: "fp16"}  # x dtypes tl.dot_scaled takes (not fp32)
GROUP_KERNEL_MAX_PAIRS = 256  # up to this many (token, slot) pairs, _group_kernel replaces group_by_expert
SUM_BLOCK = 1024
LINEAR_MAX_ROWS_FUSED = 16  # tokens up to which routed_moe's router kernel runs (its last program routes them all)


def prefill_tile_rows(dtype: torch.dtype) -> int:
    """Rows a prefill tile holds, all (token, slot) pairs of one expert: each tile decodes its expert's FP4 codes
    once for them all, so an expert that receives fewer rows pays the whole decode (and MMA) of a tile anyway.
    The engine sizes its prefill steps by it (optimized/generate.py `default_prefill_tokens`)."""
    return (PREFILL_CONFIG_FP32 if dtype == torch.float32 else PREFILL_CONFIG)["BLOCK_M"]


def gemv_pays(N: int, A: int, E: int) -> bool:
    """Whether N tokens with A experts each take the GEMV kernels: the N*A pairs against the distinct experts they
    are expected to hit at random, E * (1 - (1 - 1/E)**(N*A)). A host-side rule on shapes only (no sync, the same
    choice for every replay of a CUDA graph)."""
    P = N * A
    return N <= GEMV_MAX_TOKENS and P <= GEMV_PAIRS_PER_EXPERT * E * (1 - (1 - 1 / E) ** P)


def mx_dot_available() -> bool:
    """tl.dot_scaled compiles for every NVIDIA GPU this engine targets (on Hopper as a software upcast in the dot
    operand's registers); the Triton interpreter (CPU) runs it only from triton 3.7 on (3.6's lacks it)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return True
    from triton.runtime import interpreter
    return hasattr(interpreter.InterpreterBuilder, "create_dot_scaled")


def mxfp4_dequant(blocks: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """blocks uint8 (..., B, 16), scales uint8 (..., B) -> (..., B*32) in dtype, with the MoE kernels' decode.
    Exact in fp32 (the MoE kernels decode in fp32, then round to the activation dtype)."""
    *lead, B, half = blocks.shape
    if half != 16 or tuple(scales.shape) != (*lead, B) or blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise ValueError(f"mxfp4_dequant: blocks must be uint8 (..., B, 16) and scales uint8 (..., B), got "
                         f"{blocks.dtype} {tuple(blocks.shape)} and {scales.dtype} {tuple(scales.shape)}")
    R = blocks[..., 0, 0].numel()
    out = torch.empty((*lead, B * 32), dtype=dtype, device=blocks.device)
    if R and B:
        BLOCK_R, BLOCK_B = 16, 64
        _dequant_kernel[(triton.cdiv(R, BLOCK_R), triton.cdiv(B * 16, BLOCK_B))](
            blocks.contiguous(), scales.contiguous(), out, R, ROW_BYTES=B * 16, BLOCK_R=BLOCK_R, BLOCK_B=BLOCK_B)
    return out


def group_by_expert(ids: torch.Tensor, E: int, BLOCK_M: int):
    """ids int (N, A) -> pair order sorted by expert (P,), and per tile of a static grid of
    cdiv(P, BLOCK_M) + min(E, P) tiles: expert, first and one-past-last row in that order (spare tiles
    have start == stop). Only device ops with static shapes: no host sync."""
    flat = ids.reshape(-1).long()
    P = flat.numel()
    order = torch.sort(flat, stable=True).indices  # (P,) pair indices grouped by expert
    bounds = torch.searchsorted(flat[order], torch.arange(E + 1, device=ids.device))  # (E+1,)
    counts = bounds[1:] - bounds[:-1]
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    tile_end = torch.cumsum(tiles, 0)
    n_tiles = triton.cdiv(P, BLOCK_M) + min(E, P)  # >= sum of ceil(count_e / BLOCK_M) over experts used
    t = torch.arange(n_tiles, device=ids.device)
    te = torch.searchsorted(tile_end, t, right=True)  # expert of tile t, E for spare tiles
    used = te < E
    te = te.clamp(max=E - 1)
    start = bounds[te] + (t - (tile_end[te] - tiles[te])) * BLOCK_M
    stop = torch.minimum(start + BLOCK_M, bounds[te + 1])
    stop = torch.where(used, stop, start)
    i32 = torch.int32
    return order.to(i32), te.to(i32), start.to(i32), stop.to(i32)


def gemv_x_ref(x: torch.Tensor) -> torch.Tensor:
    """x (N, C) -> (N, 8, C//8) fp32: x * X_PRESCALE, code-major (out[n, j, w] = x[n, 8w + j] * 2**64), the layout
    the batch-1 GEMV kernels read (_mx_gemv_block). _group_kernel writes it with X_OUT."""
    N, C = x.shape
    return (x.float() * X_PRESCALE.value).reshape(N, C // 8, 8).transpose(1, 2).contiguous()


def group_by_expert_kernel(ids: torch.Tensor, E: int, BLOCK_M: int, x=None, xs=None, norm_scale=None, eps=EPS):
    """group_by_expert's outputs from one _group_kernel launch (small P only); with x, also gemv_x_ref(x) into xs
    (of rms_norm(x, norm_scale) when given)."""
    P = ids.numel()
    n_tiles = triton.cdiv(P, BLOCK_M) + min(E, P)
    i32 = dict(dtype=torch.int32, device=ids.device)
    order, te, start, stop = (torch.empty(n, **i32) for n in (P, n_tiles, n_tiles, n_tiles))
    flat = ids.reshape(-1).contiguous()
    scale = norm_scale if norm_scale is not None else flat  # a placeholder pointer when NORM is off
    x_args = (x, xs, scale, x.shape[0], x.shape[1]) if x is not None else (flat, flat, scale, 0, 0)
    _group_kernel[(1,)](flat, order, te, start, stop, P, E, n_tiles, *x_args, float(eps), BLOCK_M=BLOCK_M,
                        X_OUT=x is not None, NORM=norm_scale is not None and x is not None, BLOCK_C=1024,
                        BLOCK_P=triton.next_power_of_2(P), BLOCK_E=triton.next_power_of_2(E),
                        BLOCK_T=triton.next_power_of_2(n_tiles), num_warps=8)
    return order, te, start, stop


def _check(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2):
    if x.dim() != 2 or ids.dim() != 2:
        raise ValueError(f"moe: x must be (N, C) and ids (N, k), got {tuple(x.shape)} and {tuple(ids.shape)}")
    N, C = x.shape
    A = ids.shape[1]
    if w1_blocks.dim() != 4:
        raise ValueError(f"moe: w1_blocks must be (E, 2I, C//32, 16), got {tuple(w1_blocks.shape)}")
    E, I2 = w1_blocks.shape[:2]
    I = I2 // 2
    want = {"ids": (ids, (N, A)), "weights": (weights, (N, A)), "w1_blocks": (w1_blocks, (E, 2 * I, C // 32, 16)),
            "w1_scales": (w1_scales, (E, 2 * I, C // 32)), "b1": (b1, (E, 2 * I)),
            "w2_blocks": (w2_blocks, (E, C, I // 32, 16)), "w2_scales": (w2_scales, (E, C, I // 32)),
            "b2": (b2, (E, C))}
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"moe: {name} has shape {tuple(t.shape)}, expected {shape} (N={N}, C={C}, E={E}, I={I})")
        if t.device != x.device:
            raise ValueError(f"moe: {name} is on {t.device}, x on {x.device}")
    if C % 32 or I2 % 64:
        raise ValueError(f"moe: C={C} and I={I} must be multiples of 32 (MXFP4 blocks)")
    for name, t in (("w1_blocks", w1_blocks), ("w1_scales", w1_scales), ("w2_blocks", w2_blocks),
                    ("w2_scales", w2_scales)):
        if t.dtype != torch.uint8:
            raise ValueError(f"moe: {name} must be uint8 (packed MXFP4), got {t.dtype}")
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"moe: ids must be int32 or int64, got {ids.dtype}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"moe: x must be fp32, fp16 or bf16, got {x.dtype}")
    return N, C, A, E, I


def moe(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float,
        residual=None, norm_scale=None) -> torch.Tensor:
    """x (N, C), ids int (N, k), weights fp32 (N, k), packed MXFP4 experts -> (N, C) in x's dtype.
    residual (N, C) in x's dtype: returns residual + moe(x) instead, added in the kernel that ends the op (no
    launch of its own), rounded as torch's residual + moe(x). norm_scale (C,) fp32: the experts see
    rms_norm(x, norm_scale) (the block's norm: in the grouping kernel at small batches, else its own kernel)."""
    N, C, A, E, I = _check(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2)
    if norm_scale is not None and (tuple(norm_scale.shape) != (C,) or norm_scale.dtype != torch.float32
                                   or norm_scale.device != x.device):
        raise ValueError(f"moe: norm_scale must be ({C},) float32 on {x.device}, got {tuple(norm_scale.shape)} "
                         f"{norm_scale.dtype} on {norm_scale.device}")
    if residual is not None and (tuple(residual.shape) != (N, C) or residual.dtype != x.dtype
                                 or residual.device != x.device):
        raise ValueError(f"moe: residual must be (N, C) = {(N, C)} {x.dtype} on {x.device}, got "
                         f"{tuple(residual.shape)} {residual.dtype} on {residual.device}")
    if N == 0:
        return torch.empty_like(x)
    res = residual.contiguous() if residual is not None else x  # x: a placeholder pointer when HAS_RES is off
    cfg = (DECODE_CONFIG if N <= DECODE_MAX_TOKENS else PREFILL_CONFIG_FP32 if x.dtype == torch.float32
           else PREFILL_CONFIG)
    BM, BK = cfg["BLOCK_M"], cfg["BLOCK_K"]
    P = N * A
    small = P <= GROUP_KERNEL_MAX_PAIRS and E <= 256  # the one-kernel grouping, which checks the ids itself
    flat = ids.reshape(-1)
    if x.device.type != "cuda":
        if not bool(((flat >= 0) & (flat < E)).all()):
            raise ValueError(f"moe: expert ids must be in 0..{E - 1}, got min {int(flat.min())} max {int(flat.max())}")
    elif not small:  # device-side check: no host sync, stays graph-capturable
        torch._assert_async(((flat >= 0) & (flat < E)).all())
    x, ids, weights = x.contiguous(), ids.contiguous(), weights.float().contiguous()
    w1_blocks, w1_scales, b1 = w1_blocks.contiguous(), w1_scales.contiguous(), b1.contiguous()
    w2_blocks, w2_scales, b2 = w2_blocks.contiguous(), w2_scales.contiguous(), b2.contiguous()
    gemv = gemv_pays(N, A, E)
    if norm_scale is not None and not (gemv and small):  # else the grouping kernel normalizes as it lays x out
        x = rms_norm(x, norm_scale.contiguous())
        norm_scale = None
    xs = None
    if gemv:
        cfg, BM = GEMV_CONFIG, 1
        xs = torch.empty((N, 8, C // 8), dtype=torch.float32, device=x.device)
    if small:
        order, tile_expert, tile_start, tile_stop = group_by_expert_kernel(
            ids, E, BM, *((x, xs, norm_scale) if gemv else ()))
    else:
        order, tile_expert, tile_start, tile_stop = group_by_expert(ids, E, BM)
        if gemv:
            xs.copy_(gemv_x_ref(x))
    n_tiles = tile_expert.numel()
    if gemv:
        return _moe_gemv(x, ids, weights, order, tile_expert, tile_start, tile_stop, xs, w1_blocks, w1_scales, b1,
                         w2_blocks, w2_scales, b2, limit, residual)
    out = torch.empty_like(x)
    h = torch.empty((P, I), dtype=x.dtype, device=x.device)  # rows in the sorted pair order
    y = torch.empty((P, C), dtype=torch.float32, device=x.device)  # rows in pair order: token n, slot j = n*A + j
    ieee = x.dtype == torch.float32
    mx = dict(MX_DOT=cfg["MX_DOT"] and x.dtype in MX_DOT_FORMATS and mx_dot_available(),
              FMT=MX_DOT_FORMATS.get(x.dtype, "bf16"))
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


def _moe_gemv(x, ids, weights, order, tile_expert, tile_start, tile_stop, xs, w1_blocks, w1_scales, b1, w2_blocks,
              w2_scales, b2, limit, residual):
    """The two GEMV launches (one (token, slot) pair a tile: fp32 FMAs on codes decoded from uint32 words) after a
    grouping with tiles of 1 row and x laid out in xs (gemv_x_ref)."""
    N, C = x.shape
    A, E, I = ids.shape[1], w1_blocks.shape[0], w1_blocks.shape[1] // 2
    cfg = GEMV_CONFIG
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


def routed_moe(x, gate_w, gate_b, norm_scale, k: int, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2,
               limit: float, residual=None):
    """The MoE block after its input: x (N, C) -> (out, router_logits (N, E) in x's dtype, ids int32 (N, k),
    weights fp32 (N, k)), out = [residual +] moe(rms_norm(x), route(rms_norm(x) @ gate_w.T + gate_b, k)).
    At small batches (the GEMV regime) 3 launches: _moe_router_kernel (router, routing, grouping, x laid out),
    up, down; otherwise the ops in turn (linear, route, moe), with the same results."""
    if x.dim() != 2 or gate_w.dim() != 2 or gate_w.shape[1] != x.shape[1]:
        raise ValueError(f"routed_moe: x must be (N, C) and gate_w (E, C), got {tuple(x.shape)}, "
                         f"{tuple(gate_w.shape)}")
    N, C = x.shape
    E = gate_w.shape[0]
    if E != w1_blocks.shape[0]:
        raise ValueError(f"routed_moe: the router has {E} rows for {w1_blocks.shape[0]} experts")
    fused = (gemv_pays(N, k, E) and N * k <= GROUP_KERNEL_MAX_PAIRS and E <= 256 and 1 <= k <= E
             and N <= LINEAR_MAX_ROWS_FUSED and gate_w.dtype in (x.dtype, torch.bfloat16) and gate_b is not None
             and norm_scale is not None)
    if not fused:
        # many rows: the linear and the tensor-core experts would each run the same RMSNorm kernel on x: run it once
        # (the same numbers); the GEMV experts' grouping normalizes as it lays x out, and so does the linear kernel
        once = (norm_scale is not None and N > LINEAR_MAX_ROWS
                and not (gemv_pays(N, k, E) and N * k <= GROUP_KERNEL_MAX_PAIRS and E <= 256))
        t, t_scale = (rms_norm(x, norm_scale), None) if once else (x, norm_scale)
        logits = project_linear(t, gate_w, gate_b, norm_scale=t_scale)
        ids, weights = route_op(logits, k)
        out = moe(t, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit, residual=residual,
                  norm_scale=t_scale)
        return out, logits, ids, weights
    ids = torch.empty((N, k), dtype=torch.int32, device=x.device)  # written by the router kernel; its shape is
    weights = torch.empty((N, k), dtype=torch.float32, device=x.device)  # checked below with the other arguments
    _check(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2)
    if tuple(gate_b.shape) != (E,) or tuple(norm_scale.shape) != (C,) or norm_scale.dtype != torch.float32:
        raise ValueError(f"routed_moe: gate_b must be ({E},) and norm_scale ({C},) float32, got "
                         f"{tuple(gate_b.shape)}, {tuple(norm_scale.shape)} {norm_scale.dtype}")
    if residual is not None and (tuple(residual.shape) != (N, C) or residual.dtype != x.dtype):
        raise ValueError(f"routed_moe: residual must be {(N, C)} {x.dtype}, got {tuple(residual.shape)} "
                         f"{residual.dtype}")
    x, gate_w, gate_b, norm_scale = x.contiguous(), gate_w.contiguous(), gate_b.contiguous(), norm_scale.contiguous()
    w1_blocks, w1_scales, b1 = w1_blocks.contiguous(), w1_scales.contiguous(), b1.contiguous()
    w2_blocks, w2_scales, b2 = w2_blocks.contiguous(), w2_scales.contiguous(), b2.contiguous()
    P = N * k
    n_tiles = P + min(E, P)  # group_by_expert's static grid at tiles of 1 row
    i32 = dict(dtype=torch.int32, device=x.device)
    order, te, start, stop = (torch.empty(n, **i32) for n in (P, n_tiles, n_tiles, n_tiles))
    logits = torch.empty((N, E), dtype=x.dtype, device=x.device)
    xs = torch.empty((N, 8, C // 8), dtype=torch.float32, device=x.device)
    block_o = _block_o(E)
    _moe_router_kernel[(triton.cdiv(E, block_o), N)](
        x, gate_w, gate_b, norm_scale, logits, counters(x.device, 1), ids, weights, order, te, start, stop, xs,
        N, n_tiles, float(EPS), C=C, E=E, A=k, BLOCK_O=block_o, BLOCK_C=LINEAR_CONFIG["BLOCK_C"],
        BLOCK_E=triton.next_power_of_2(E), BLOCK_A=triton.next_power_of_2(k), BLOCK_P=triton.next_power_of_2(P),
        BLOCK_T=triton.next_power_of_2(n_tiles), num_warps=4, **launch_args(x.device))
    out = _moe_gemv(x, ids, weights, order, te, start, stop, xs, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2,
                    limit, residual)
    return out, logits, ids, weights
