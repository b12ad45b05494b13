"""Dense projections (qkv, out, router, unembedding): torch's linear, except a single row on CPU.

One row (batch-1 decode) on CPU:
  - bfloat16: csrc/bf16_matvec.c (built by cbuild.py): AVX512_BF16 dot products, float32 sums. torch 2.13's
    CPU bf16 mv costs ~28 us for the 32x768 router (4 us in float32) and is compute-bound even on cached
    matrices; the kernel leaves only the weight reads (bench/engine_cpu.py);
  - float32 (or no C compiler): torch.mv / torch.addmv, ~1.2x faster than linear's matmul path at one row.
Same math everywhere: products summed in float32, bias added, one rounding to the dtype.
Not here: the packed MXFP4 experts (moe.py, mxfp4_cpu.py).

Legend: C input features, O output features.
"""
import ctypes

import torch

from optimized import cbuild

SOURCE = "bf16_matvec.c"
_P, _I64 = ctypes.c_void_p, ctypes.c_int64
SIGNATURES = {"bf16_matvec": ([_P, _P, _P, _P, _I64, _I64, ctypes.c_int], None)}


def _bf16_lib():
    return cbuild.load(SOURCE, SIGNATURES)


def bf16_matvec(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None = None, simd: bool = True) -> torch.Tensor:
    """w (O, C), x (C,), b (O,) or None, bfloat16 contiguous on the CPU -> (O,) float32 (the C kernel).
    simd=False forces the scalar path (tests)."""
    O, C = w.shape
    assert tuple(x.shape) == (C,) and (b is None or tuple(b.shape) == (O,)), (w.shape, x.shape)
    for name, t in (("w", w), ("x", x), ("b", b)):
        if t is not None and (t.dtype != torch.bfloat16 or t.device.type != "cpu" or not t.is_contiguous()):
            raise ValueError(f"bf16_matvec: {name} must be a contiguous bfloat16 CPU tensor "
                             f"({t.dtype}, {t.device}, strides {t.stride()})")
    lib = _bf16_lib()
    if lib is None:
        raise RuntimeError(f"the CPU bf16 kernel is unavailable: {cbuild.reasons[SOURCE]}")
    out = torch.empty(O, dtype=torch.float32)
    lib.bf16_matvec(w.data_ptr(), x.data_ptr(), None if b is None else b.data_ptr(), out.data_ptr(), O, C, int(simd))
    return out


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., C), w (O, C), b (O,) or None -> (..., O)."""
    O, C = w.shape
    assert x.shape[-1] == C and (b is None or tuple(b.shape) == (O,)), (x.shape, w.shape, b is None or b.shape)
    if x.device.type == "cpu" and x.numel() == C:
        v = x.reshape(C)
        if (w.dtype == v.dtype == torch.bfloat16 and (b is None or b.dtype == torch.bfloat16) and w.is_contiguous()
                and _bf16_lib() is not None):
            y = bf16_matvec(w, v.contiguous(), b).to(torch.bfloat16)
        else:
            y = torch.mv(w, v) if b is None else torch.addmv(b, w, v)
        return y.reshape(*x.shape[:-1], O)
    return torch.nn.functional.linear(x, w, b)
