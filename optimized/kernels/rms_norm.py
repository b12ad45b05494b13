"""gpt-oss RMSNorm as one Triton kernel: y = x * rsqrt(mean(x^2) + eps) * scale, float32 math, one rounding.

The torch path (optimized/norm.py) is three kernels on a GPU (the cast to float32, torch's rms_norm, the cast
back), 2 per layer + 1 a decode step; here one program per row reads x once. Its *_ref is optimized.norm's
torch path (`rms_norm(..., kernel=False)`), so the math and the rounding points are the same; only the order of
the float32 sum of squares differs.
Not here: the residual add before it (attention.py / moe.py keep it in torch).

Legend: N rows, C features.
"""
import torch
import triton
import triton.language as tl

from optimized.norm import rms_norm as torch_rms_norm
from reference.norm import EPS


def rms_norm_ref(x: torch.Tensor, scale: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return torch_rms_norm(x, scale, eps, kernel=False)


@triton.jit
def _rms_norm_kernel(x_ptr, scale_ptr, out_ptr, C, eps, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    m = c < C
    x = tl.load(x_ptr + row * C + c, mask=m, other=0.0)
    xf = x.to(tl.float32)
    r = tl.rsqrt(tl.sum(xf * xf, axis=0) / C + eps)
    s = tl.load(scale_ptr + c, mask=m, other=0.0)
    tl.store(out_ptr + row * C + c, (xf * r * s).to(x.dtype), mask=m)


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """x (..., C) float32/float16/bfloat16, scale (C,) float32 -> (..., C) in x's dtype; one launch, no host sync."""
    *lead, C = x.shape
    if tuple(scale.shape) != (C,):
        raise ValueError(f"rms_norm: scale {tuple(scale.shape)} for features {C}")
    if scale.dtype != torch.float32 or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"rms_norm: x must be float32/float16/bfloat16 and scale float32, got {x.dtype}, "
                         f"{scale.dtype}")
    x2 = x.reshape(-1, C).contiguous()
    out = torch.empty_like(x2)
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](x2, scale.contiguous(), out, C, float(eps),
                                         BLOCK_C=triton.next_power_of_2(C), num_warps=4)
    return out.reshape(x.shape)
