"""YaRN rotary position embedding exactly as gpt-oss applies it.

Source: openai/gpt-oss gpt_oss/torch/model.py (RotaryEmbedding, _apply_rotary_emb); YaRN, arXiv:2309.00071.
Quirks, each where it happens below:
  - NTK-by-parts ramp with UNROUNDED low/high (HF's generic YaRN floors/ceils them; gpt-oss does not).
  - the concentration 0.1*ln(factor)+1 multiplies cos and sin (so q.k grows by its square), not the logits.
  - half-split rotation: dimension i pairs with i + D/2 (not the interleaved pairs 2i, 2i+1 of GPT-J).
Computed in float64 from the config (gpt-oss computes the table in float32).

Legend: T tokens, D head_dim, F = D/2 frequencies.
"""
import math

import numpy as np


def yarn_ramp_bounds(head_dim: int, theta: float, initial_context_length: int,
                     ntk_alpha: float, ntk_beta: float) -> tuple[float, float]:
    """Frequency indices where the ramp from extrapolation (fast dims) to interpolation (slow dims) starts and ends."""
    d_half = head_dim / 2
    low = d_half * math.log(initial_context_length / (ntk_beta * 2 * math.pi)) / math.log(theta)
    high = d_half * math.log(initial_context_length / (ntk_alpha * 2 * math.pi)) / math.log(theta)
    return low, high  # quirk: not rounded to integers


def inv_freq_and_concentration(head_dim: int, theta: float, scaling_factor: float, initial_context_length: int,
                               ntk_alpha: float, ntk_beta: float) -> tuple[np.ndarray, float]:
    F = head_dim // 2
    freq = theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (F,)
    if scaling_factor <= 1.0:
        return 1.0 / freq, 1.0
    concentration = 0.1 * math.log(scaling_factor) + 1.0
    low, high = yarn_ramp_bounds(head_dim, theta, initial_context_length, ntk_alpha, ntk_beta)
    ramp = (np.arange(F, dtype=np.float64) - low) / (high - low)
    mask = 1.0 - np.clip(ramp, 0.0, 1.0)  # 1: keep the original frequency (extrapolate), 0: divide it by factor
    inv_freq = (1.0 / (scaling_factor * freq)) * (1.0 - mask) + (1.0 / freq) * mask
    return inv_freq, concentration


def cos_sin(positions: np.ndarray, inv_freq: np.ndarray, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    (T,), (F,) = positions.shape, inv_freq.shape
    angles = np.einsum("t,f->tf", positions.astype(np.float64), inv_freq)  # (T, F)
    return np.cos(angles) * concentration, np.sin(angles) * concentration  # quirk: concentration on cos AND sin


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x (T, ..., D): rotate each head vector by its token's angles."""
    T, *_, D = x.shape
    F = D // 2
    assert cos.shape == sin.shape == (T, F), f"cos/sin {cos.shape} for x {x.shape}"
    extra = (1,) * (x.ndim - 2)
    c, s = cos.reshape(T, *extra, F), sin.reshape(T, *extra, F)
    x1, x2 = x[..., :F], x[..., F:]  # quirk: halves, not interleaved pairs
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
