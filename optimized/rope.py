"""YaRN RoPE in torch, as gpt-oss applies it: the frequency table once per model, angles per token position.

Source: openai/gpt-oss gpt_oss/torch/model.py (RotaryEmbedding); YaRN arXiv:2309.00071. Quirks, as in
reference/rope.py: unrounded NTK-by-parts ramp bounds, concentration multiplying cos AND sin, half-split
rotation (i pairs with i + D/2). The table is computed in float64 and the angles in float32 from it (angles
of positions up to 2**24 are exact integers times a float32 frequency; gpt-oss does the same in float32).
The ramp bounds come from reference.rope.yarn_ramp_bounds (config validation shares them; scalar math).

Legend: B sequences, T tokens, H heads, D head_dim, F = D/2.
"""
import math

import torch

from reference.rope import yarn_ramp_bounds


def inv_freq_and_concentration(head_dim: int, theta: float, scaling_factor: float, initial_context_length: int,
                               ntk_alpha: float, ntk_beta: float) -> tuple[torch.Tensor, float]:
    F = head_dim // 2
    freq = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (F,)
    if scaling_factor <= 1.0:
        return 1.0 / freq, 1.0
    concentration = 0.1 * math.log(scaling_factor) + 1.0
    low, high = yarn_ramp_bounds(head_dim, theta, initial_context_length, ntk_alpha, ntk_beta)
    ramp = (torch.arange(F, dtype=torch.float64) - low) / (high - low)
    mask = 1.0 - ramp.clamp(0.0, 1.0)  # 1: keep the frequency (extrapolate), 0: divide it by the factor
    inv_freq = (1.0 / (scaling_factor * freq)) * (1.0 - mask) + (1.0 / freq) * mask
    return inv_freq, concentration


def cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float):
    """positions (..., ) int -> cos, sin (..., F) float32 with the concentration multiplied in."""
    (F,) = inv_freq.shape
    angles = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device)  # (..., F)
    return (torch.cos(angles) * concentration).float(), (torch.sin(angles) * concentration).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D) rotated by cos/sin (B, T, F); computed in float32, returned in x's dtype."""
    B, T, H, D = x.shape
    F = D // 2
    assert tuple(cos.shape) == tuple(sin.shape) == (B, T, F), (tuple(cos.shape), tuple(x.shape))
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = x[..., :F].float(), x[..., F:].float()  # quirk: halves, not interleaved pairs
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)
