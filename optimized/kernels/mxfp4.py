"""MXFP4 in Triton registers: the packed expert weights decoded where a kernel multiplies them, never in memory.

Mirrors reference/mxfp4.py `decode` (and optimized/mxfp4.py, the torch decode its *_ref calls). Three ways in, one
per MoE kernel family (moe_mma.py, moe_gemv.py):
  load_fp4_t      codes decoded to fp32 then the activation dtype, for tl.dot (fp32 x: the IEEE path);
  load_mx         the packed codes and E8M0 scales as tl.dot_scaled's operands, not decoded here (bf16/fp16 x);
  mx_gemv_block   one K step of a GEMV on codes read as uint32 words (fp4_pair: two codes in 5 integer ops), x
                  laid out by gemv_x_ref.
mxfp4_dequant runs the register decode on its own (tests only: every code under every scale).
Quirks, each where it happens below:
  - LOW nibble first: element 2j of a block is byte j & 0xF; value = fp4 * 2**(scale - 127).
  - E8M0 0xFF is NaN, 0 the fp32 subnormal 2**-127 (kept, never flushed: the GEMV's decode needs subnormals).
The low-nibble-first quirk avoids any interleave in registers: the low nibbles of a row's bytes are its
even-indexed weights, so x is loaded as its even and odd columns and each K step is two dots.
Why the GEMV decodes so (its instruction counts): optimized/README.md "Triton MoE"; BENCHMARKS.md "Static bound".

Legend: R weight rows, K reduction length (2 codes a byte, 32 a scale), B blocks of 32 values.
"""
import os

import torch
import triton
import triton.language as tl

from optimized import mxfp4 as torch_mxfp4
from reference.mxfp4 import SCALE_NAN

# the GEMV kernels (fp4_pair): x * 2**64 times fp4 * 2**-126 is a normal fp32 for |fp4 * x| >= 2**-62 (smaller
# products keep fewer bits, as subnormals), and 2**(126 - 64) restores each block's sum before its scale; x would
# overflow only beyond 2**64
X_PRESCALE = tl.constexpr(2.0 ** 64)
UNDO_PRESCALE = tl.constexpr(2.0 ** 62)
MX_DOT_FORMATS = {torch.bfloat16: "bf16", torch.float16: "fp16"}  # x dtypes tl.dot_scaled takes (not fp32)


def mxfp4_dequant_ref(blocks: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """blocks uint8 (..., B, 16), scales uint8 (..., B) -> (..., B*32) in dtype: optimized/mxfp4.py's decode, exact
    in fp32, then rounded to dtype, with E8M0 0xFF as NaN (the kernels decode it so; the torch path's loader
    refuses it, so its decode has no NaN case)."""
    *lead, B, half = blocks.shape
    assert half == 16 and tuple(scales.shape) == (*lead, B), (blocks.shape, scales.shape)
    values = torch_mxfp4.decode(blocks, scales, torch.float32).reshape(*lead, B, 32)
    values = torch.where((scales == SCALE_NAN)[..., None], torch.nan, values)
    return values.reshape(*lead, B * 32).to(dtype)


def gemv_x_ref(x: torch.Tensor) -> torch.Tensor:
    """x (N, C) -> (N, 8, C//8) fp32: x * X_PRESCALE, code-major (out[n, j, w] = x[n, 8w + j] * 2**64), the layout
    the GEMV kernels read (mx_gemv_block). moe_group.py's kernels write it (X_OUT)."""
    N, C = x.shape
    return (x.float() * X_PRESCALE.value).reshape(N, C // 8, 8).transpose(1, 2).contiguous()


def mx_dot_available() -> bool:
    """tl.dot_scaled compiles for every NVIDIA GPU this engine targets (on Hopper as a software upcast in the dot
    operand's registers); the Triton interpreter (CPU) runs it only from triton 3.7 on (3.6's lacks it)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return True
    from triton.runtime import interpreter
    return hasattr(interpreter.InterpreterBuilder, "create_dot_scaled")


@triton.jit
def fp4_to_f32(c):
    """FP4 E2M1 codes (int32, 0..15) -> fp32. Magnitudes >= 1 are built as fp32 bits: exponent e-1, mantissa m."""
    c3 = c & 7  # e = c3 >> 1, m = c3 & 1
    normal = ((c3 + 252) << 22).to(tl.float32, bitcast=True)  # (e + 126) << 23 | m << 22 == (c3 + 252) << 22
    mag = tl.where(c3 >= 2, normal, c3.to(tl.float32) * 0.5)  # e == 0: zero or the subnormal 0.5
    return tl.where((c & 8) != 0, -mag, mag)


@triton.jit
def e8m0(s):
    """E8M0 scale bytes (int32) -> fp32 2**(s - 127): the exponent field as is for s in 1..254, the subnormal
    2**-127 for s == 0, NaN for s == 255."""
    scale = (s << 23).to(tl.float32, bitcast=True)
    scale = tl.where(s == 0, 5.877471754111438e-39, scale)  # 2**-127 is an fp32 subnormal
    return tl.where(s == 255, float("nan"), scale)  # E8M0 0xFF is NaN


@triton.jit
def load_fp4_t(w_ptr, s_ptr, rows, mask_r, kb, mask_kb, ROW_BYTES: tl.constexpr, DT: tl.constexpr):
    """Rows (R,) int64 of a (rows, ROW_BYTES) code matrix, byte columns kb (HALF,) -> decoded weights
    transposed, as (lo, hi) each (HALF, R) in DT: lo holds the even K indices, hi the odd ones."""
    m = mask_kb[:, None] & mask_r[None, :]
    byte = tl.load(w_ptr + rows[None, :] * ROW_BYTES + kb[:, None], mask=m, other=0).to(tl.int32)
    # one E8M0 scale per 16 bytes (32 values); the repeated addresses are served by the cache
    s = tl.load(s_ptr + rows[None, :] * (ROW_BYTES // 16) + (kb // 16)[:, None], mask=m, other=127).to(tl.int32)
    scale = e8m0(s)
    lo = fp4_to_f32(byte & 15) * scale  # quirk: low nibble = even element
    hi = fp4_to_f32(byte >> 4) * scale
    return lo.to(DT), hi.to(DT)


@triton.jit
def load_mx(w_ptr, s_ptr, rows, mask_r, k0, K: tl.constexpr, BLOCK_K: tl.constexpr):
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
def fp4_pair(words, j: tl.constexpr):
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
def mx_gemv_block(w_ptr, s_ptr, rows, mask_r, xs_ptr, k0, K: tl.constexpr, BLOCK_K: tl.constexpr,
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
        lo, hi = fp4_pair(words, j)
        if MASK_K:
            x_lo = tl.load(xs_ptr + j * (K // 8) + word, mask=ok, other=0.0)
            x_hi = tl.load(xs_ptr + (j + 4) * (K // 8) + word, mask=ok, other=0.0)
        else:
            x_lo = tl.load(xs_ptr + j * (K // 8) + word)
            x_hi = tl.load(xs_ptr + (j + 4) * (K // 8) + word)
        part += lo * x_lo[None, :, :]
        part += hi * x_hi[None, :, :]
    scale = e8m0(s)
    # undo the 2**-126 of fp4_pair and the X_PRESCALE of x: 2**(126 - 64) = 2**62, then the block's scale
    return tl.sum(tl.sum(part, axis=2) * UNDO_PRESCALE * scale, axis=1)


@triton.jit
def _dequant_kernel(w_ptr, s_ptr, out_ptr, R, ROW_BYTES: tl.constexpr, BLOCK_R: tl.constexpr,
                    BLOCK_B: tl.constexpr):
    """The in-register decode of the MoE kernels on its own: (R, ROW_BYTES) codes -> (R, 2*ROW_BYTES)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < R
    kb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_kb = kb < ROW_BYTES
    lo, hi = load_fp4_t(w_ptr, s_ptr, rows.to(tl.int64), mask_r, kb, mask_kb, ROW_BYTES,
                         out_ptr.dtype.element_ty)
    at = out_ptr + rows[None, :].to(tl.int64) * (2 * ROW_BYTES) + 2 * kb[:, None]
    m = mask_kb[:, None] & mask_r[None, :]
    tl.store(at, lo, mask=m)
    tl.store(at + 1, hi, mask=m)


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
