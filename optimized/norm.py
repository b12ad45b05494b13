"""RMSNorm in torch: computed in float32 whatever the activation dtype, then cast back (as gpt-oss does).

Source: openai/gpt-oss gpt_oss/torch/model.py (RMSNorm); eps is the model's constant from reference/norm.py.
A few rows on CPU (a decode step) go to csrc/rms_norm.c (same math, ~1 us instead of torch's 20-80 us a row);
its *_ref is the torch path below (`rms_norm(..., kernel=False)`).
"""
import ctypes

import torch

from optimized import cbuild
from reference.norm import EPS

SOURCE = "rms_norm.c"
_P, _I64 = ctypes.c_void_p, ctypes.c_int64
SIGNATURES = {"rms_norm_rows": ([_P, _P, _P, _I64, _I64, ctypes.c_float, ctypes.c_int, ctypes.c_int], None)}
KERNEL_ROWS = 64  # rows up to which CPU takes the C kernel; longer prompts keep torch's vectorized op


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = EPS, kernel: bool = True) -> torch.Tensor:
    *_, C = x.shape
    assert tuple(scale.shape) == (C,), f"norm scale {tuple(scale.shape)} for features {C}"
    if (kernel and x.device.type == "cpu" and x.numel() <= KERNEL_ROWS * C and scale.dtype == torch.float32
            and x.dtype in (torch.float32, torch.bfloat16) and x.is_contiguous() and scale.is_contiguous()):
        lib = cbuild.load(SOURCE, SIGNATURES)
        if lib is not None:
            out = torch.empty_like(x)
            bf16 = int(x.dtype == torch.bfloat16)
            lib.rms_norm_rows(x.data_ptr(), scale.data_ptr(), out.data_ptr(), x.numel() // C, C, eps, bf16, bf16)
            return out
    # torch's fused rms_norm: x * rsqrt(mean(x**2) + eps) * scale, on the float32 copy (one kernel, not six)
    return torch.nn.functional.rms_norm(x.float(), (C,), scale.float(), eps).to(x.dtype)


def norm_for(ops):
    """The backend's rms_norm where it has one (ops.py: Triton's kernels/rms_norm.py), else the one above."""
    return getattr(ops, "rms_norm", None) or rms_norm
