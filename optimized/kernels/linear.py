"""The decode step's dense projections as one Triton kernel each: [residual +] rms_norm?(x) @ W.T [+ b].

At batch 1 a gpt-oss layer's dense projections (qkv 2880 -> 5120, out 4096 -> 2880, router 2880 -> E) read half
of its bytes, and in torch each comes with launches of its own around cuBLAS: the RMSNorm before qkv and before
the router, the residual add after out. Here the norm is the kernel's prologue (every program recomputes its row's
sum of squares: 2880 values from L2, against the BLOCK_O weight rows x 2880 it streams from HBM) and the bias and
the residual add its epilogue: one launch a projection (the unembedding with the final norm included).
Few rows only (LINEAR_MAX_ROWS: decode at small batches): one program per (block of BLOCK_O weight rows, row of x),
the rows of a block launched side by side (its weights read from HBM once), fp32 FMAs (nothing for tensor cores
to share at so few rows). More rows keep torch's steps (cuBLAS wants tiles of many rows), with this backend's
RMSNorm kernel. The qkv projection at decode has its own kernel, with RoPE and the cache write in its epilogue
(rope_cache.py's qkv_rope_cache_write, on the same `project_rows`).
Its *_ref is linear_ref: norm.py's torch RMSNorm, optimized.linear's torch linear, then the add: the steps it
replaces, with the same rounding points (t rounded to x's dtype after the norm, acc + b rounded once, then
residual + y rounded once); only the order of the fp32 sums differs.
Not here: the packed MXFP4 experts (moe.py).

Legend: N rows, C input features, O output features.
"""
import torch
import triton
import triton.language as tl

from optimized.kernels import tuning
from optimized.kernels.pdl import _pdl_enter, _prefetch_rows, launch_args
from optimized.kernels.rms_norm import rms_norm
from optimized.kernels.rounding import inv_rms, round_add
from optimized.linear import linear as torch_linear
from optimized.norm import rms_norm as torch_rms_norm
from reference.norm import EPS


def linear_ref(x, w, b=None, residual=None, norm_scale=None, eps: float = EPS):
    """The torch steps: [residual +] linear(rms_norm(x) if norm_scale is given else x, w, b)."""
    t = x if norm_scale is None else torch_rms_norm(x, norm_scale, eps, kernel=False)
    y = torch_linear(t, w, b)
    return y if residual is None else residual + y


@triton.jit
def project_rows(x_ptr, w_ptr, b_ptr, scale_ptr, n, offs_o, mask_o, eps,
                 C: tl.constexpr, O: tl.constexpr, HAS_BIAS: tl.constexpr, NORM: tl.constexpr,
                 BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    """Rows offs_o of t[n] @ W.T [+ b] in fp32, before rounding; t = x or its RMSNorm. Masks only where a block can
    pass the matrix: rows when BLOCK_O does not divide O, features in the last step when BLOCK_C does not divide C."""
    MASK_O: tl.constexpr = O % BLOCK_O != 0
    C_FULL: tl.constexpr = C - C % BLOCK_C
    c = tl.arange(0, BLOCK_C)
    x_row = x_ptr + n * C
    DT = x_ptr.dtype.element_ty
    r = 1.0
    if NORM:  # the row's 1/RMS first
        r = inv_rms(x_row, C, eps, BLOCK_C)
    w_rows = w_ptr + offs_o[:, None].to(tl.int64) * C
    acc = tl.zeros([BLOCK_O, BLOCK_C], tl.float32)
    for c0 in range(0, C_FULL, BLOCK_C):
        xk = tl.load(x_row + c0 + c).to(tl.float32)
        if NORM:  # t rounded to x's dtype, as the RMSNorm kernel writes it
            xk = (xk * r * tl.load(scale_ptr + c0 + c)).to(DT).to(tl.float32)
        if MASK_O:
            wk = tl.load(w_rows + c0 + c[None, :], mask=mask_o[:, None], other=0.0)
        else:
            wk = tl.load(w_rows + c0 + c[None, :])
        acc += wk.to(tl.float32) * xk[None, :]
    if C_FULL < C:  # the tail step
        mask_c = C_FULL + c < C
        xk = tl.load(x_row + C_FULL + c, mask=mask_c, other=0.0).to(tl.float32)
        if NORM:
            xk = (xk * r * tl.load(scale_ptr + C_FULL + c, mask=mask_c, other=0.0)).to(DT).to(tl.float32)
        wk = tl.load(w_rows + C_FULL + c[None, :], mask=mask_o[:, None] & mask_c[None, :], other=0.0)
        acc += wk.to(tl.float32) * xk[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(tl.float32)
    return y


@triton.jit
def _linear_kernel(x_ptr, w_ptr, b_ptr, res_ptr, scale_ptr, out_ptr, N, eps,
                   C: tl.constexpr, O: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                   NORM: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, PDL: tl.constexpr):
    """Program (o block, row n): out[n, o] = [res[n, o] +] (sum over c of t[n, c] w[o, c] [+ b[o]]), t = x or its
    RMSNorm. Rows vary fastest: a block's N programs run side by side, so its weights come from HBM once and from
    L2 for the other rows (the unembedding's 1.16 GB would otherwise stream N times). PDL: pdl.py."""
    pid = tl.program_id(0)
    n = (pid % N).to(tl.int64)
    offs_o = (pid // N) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < O
    _prefetch_rows(PDL, w_ptr, offs_o, mask_o, C)  # PDL == 2: this program's weight rows into L2 before the wait
    _pdl_enter(PDL)
    y = project_rows(x_ptr, w_ptr, b_ptr, scale_ptr, n, offs_o, mask_o, eps, C, O, HAS_BIAS, NORM, BLOCK_O, BLOCK_C)
    # one rounding of acc + b, as cuBLAS's epilogue; then the residual add as torch's
    y = round_add(y, res_ptr + n * O + offs_o, mask_o, HAS_RES, out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * O + offs_o, y, mask=mask_o)


LINEAR_MAX_ROWS = 4  # rows of x up to which the kernel runs (each program streams its weight rows for one row)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_o(O: int) -> int:
    """BLOCK_O, smaller for short outputs (the router's E rows) so that they still spread over the SMs."""
    return max(2, min(tuning.LINEAR_CONFIG["BLOCK_O"], triton.next_power_of_2(triton.cdiv(O, 132))))


def check_args(name, x, w, b, norm_scale):
    """What a projection kernel needs of b, norm_scale and the dtypes, for x (..., C) and w (O, C); errors name
    `name` (linear here, rope_cache.py's qkv_rope_cache_write)."""
    O, C = w.shape
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"{name}: b must be ({O},), got {tuple(b.shape)}")
    if norm_scale is not None and (tuple(norm_scale.shape) != (C,) or norm_scale.dtype != torch.float32):
        raise ValueError(f"{name}: norm_scale must be ({C},) float32, got {tuple(norm_scale.shape)} {norm_scale.dtype}")
    if x.dtype not in DTYPES or w.dtype not in DTYPES or (w.dtype != x.dtype and x.dtype != torch.float32):
        raise ValueError(f"{name}: x {x.dtype} with w {w.dtype}: x and w share a dtype, or x is float32")


def linear(x, w, b=None, residual=None, norm_scale=None, eps: float = EPS):
    """x (..., C), w (O, C), b (O,) or None, residual (..., O) or None, norm_scale (C,) fp32 or None
    -> (..., O) in x's dtype: [residual +] linear(rms_norm(x, norm_scale) if given else x, w, b), one launch for
    up to LINEAR_MAX_ROWS rows. A float32 x with bf16 w is a float32 model's bf16-stored matrix (widened exactly)."""
    *lead, C = x.shape
    if w.dim() != 2 or w.shape[1] != C:
        raise ValueError(f"linear: w must be (O, {C}) for x {tuple(x.shape)}, got {tuple(w.shape)}")
    O = w.shape[0]
    if residual is not None and (tuple(residual.shape) != (*lead, O) or residual.dtype != x.dtype):
        raise ValueError(f"linear: residual must be {(*lead, O)} {x.dtype}, got {tuple(residual.shape)} "
                         f"{residual.dtype}")
    check_args("linear", x, w, b, norm_scale)
    x2 = x.reshape(-1, C)
    N = x2.shape[0]
    if N > LINEAR_MAX_ROWS or N == 0:  # many rows: cuBLAS, the norm and the add as their own kernels
        t = x if norm_scale is None else rms_norm(x, norm_scale, eps)
        y = torch_linear(t, w, b)
        return y if residual is None else residual + y
    out = torch.empty((N, O), dtype=x.dtype, device=x.device)
    x2, w = x2.contiguous(), w.contiguous()
    res = residual.reshape(N, O).contiguous() if residual is not None else out  # placeholders when off
    cfg = tuning.LINEAR_CONFIG
    bo = block_o(O)
    _linear_kernel[(N * triton.cdiv(O, bo),)](
        x2, w, b if b is not None else w, res, norm_scale if norm_scale is not None else w, out, N, float(eps),
        C=C, O=O, HAS_BIAS=b is not None, HAS_RES=residual is not None, NORM=norm_scale is not None,
        BLOCK_O=bo, BLOCK_C=cfg["BLOCK_C"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        **launch_args(x.device))
    return out.reshape(*lead, O)
