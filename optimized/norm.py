"""RMSNorm in torch: computed in float32 whatever the activation dtype, then cast back (as gpt-oss does).

Source: openai/gpt-oss gpt_oss/torch/model.py (RMSNorm); eps is the model's constant from reference/norm.py.
"""
import torch

from reference.norm import EPS


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    *_, C = x.shape
    assert tuple(scale.shape) == (C,), f"norm scale {tuple(scale.shape)} for features {C}"
    # torch's fused rms_norm: x * rsqrt(mean(x**2) + eps) * scale, on the float32 copy (one kernel, not six)
    return torch.nn.functional.rms_norm(x.float(), (C,), scale.float(), eps).to(x.dtype)
