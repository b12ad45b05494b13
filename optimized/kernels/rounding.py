"""Triton helpers that give several kernel files the torch ops' arithmetic: the same rounding points, so that a
kernel differs from its *_ref only in the order of its fp32 sums.

  dot(a, b, acc, IEEE)            tl.dot, in exact fp32 products for fp32 inputs (moe_mma.py, attention.py)
  inv_rms(x_row, C, eps, BLOCK_C) norm.py's 1 / RMS of a row, in fp32 (linear.py's prologue, moe_group.py)
  round_add(y, res_at, ...)       y rounded to the output dtype, then torch's residual + y (linear.py, moe_*.py)
Not here: kernels; each file that uses these holds its own.
"""
import triton
import triton.language as tl


@triton.jit
def dot(a, b, acc, IEEE: tl.constexpr):
    if IEEE:  # fp32 inputs: exact fp32 products (the default would be tf32 on a GPU)
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def inv_rms(x_row, C, eps, BLOCK_C: tl.constexpr):
    """1 / RMS of a row of C values, as norm.py: rsqrt(mean(x**2) + eps), in fp32, BLOCK_C values a step."""
    c = tl.arange(0, BLOCK_C)
    ss = tl.zeros([BLOCK_C], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        xk = tl.load(x_row + c0 + c, mask=c0 + c < C, other=0.0).to(tl.float32)
        ss += xk * xk
    return tl.rsqrt(tl.sum(ss, axis=0) / C + eps)


@triton.jit
def round_add(y, res_at, mask, HAS_RES: tl.constexpr, DT: tl.constexpr):
    """y (fp32) rounded to DT; HAS_RES: then the residual at res_at added as torch's residual + y does (on the
    rounded y, in fp32, rounded once)."""
    y = y.to(DT)
    if HAS_RES:
        y = (tl.load(res_at, mask=mask, other=0.0).to(tl.float32) + y.to(tl.float32)).to(DT)
    return y
