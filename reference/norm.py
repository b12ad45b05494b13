"""RMSNorm as gpt-oss uses it: x / sqrt(mean(x^2) + eps) * scale, no mean subtraction, no bias.

Source: openai/gpt-oss gpt_oss/torch/model.py (RMSNorm, eps 1e-5, computed in float32 there; float64 here).
"""
import numpy as np

EPS = 1e-5  # not in config.json: a constant of the model


def rms_norm(x: np.ndarray, scale: np.ndarray, eps: float = EPS) -> np.ndarray:
    *_, C = x.shape
    assert scale.shape == (C,), f"norm scale {scale.shape} for features {C}"
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale
