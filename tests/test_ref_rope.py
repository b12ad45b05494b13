"""reference/rope.py against hand formulas: YaRN ramp bounds (unrounded), inverse frequencies per index,
cos/sin up to position 131072, half-split rotation as an explicit loop, norm scaled by the concentration,
relative-position property, and gpt-oss's own formula (gpt_oss/torch/model.py RotaryEmbedding) in torch."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import rope
from reference.config import GPT_OSS_20B

from helpers import TINY


def bounds_by_hand(D, theta, L, alpha, beta):
    # YaRN: dimension index i completes L / (2*pi*theta**(2i/D)) turns over the original context L;
    # the ramp runs from beta turns (low index) down to alpha turns (high index), solved for i, not rounded
    return (D / 2 * math.log(L / (2 * math.pi * beta)) / math.log(theta),
            D / 2 * math.log(L / (2 * math.pi * alpha)) / math.log(theta))


def inv_freq_by_hand(D, theta, factor, L, alpha, beta):
    low, high = bounds_by_hand(D, theta, L, alpha, beta)
    out = []
    for i in range(D // 2):
        base = 1.0 / theta ** (2 * i / D)
        if factor <= 1.0 or i <= low:
            out.append(base)  # fast dimensions: extrapolate (original frequency)
        elif i >= high:
            out.append(base / factor)  # slow dimensions: interpolate
        else:
            t = (i - low) / (high - low)  # linear ramp between the two
            out.append((1 - t) * base + t * base / factor)
    return np.array(out)


def gpt_oss_torch_formula(D, base, factor, L, alpha, beta):
    """openai/gpt-oss RotaryEmbedding._compute_concentration_and_inv_freq, re-typed in float64 torch."""
    freq = base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    if factor > 1.0:
        concentration = 0.1 * math.log(factor) + 1.0
        d_half = D / 2
        low = d_half * math.log(L / (beta * 2 * math.pi)) / math.log(base)
        high = d_half * math.log(L / (alpha * 2 * math.pi)) / math.log(base)
        assert 0 < low < high < d_half - 1
        interpolation = 1.0 / (factor * freq)
        extrapolation = 1.0 / freq
        ramp = (torch.arange(d_half, dtype=torch.float64) - low) / (high - low)
        mask = 1 - ramp.clamp(0, 1)
        inv_freq = interpolation * (1 - mask) + extrapolation * mask
    else:
        concentration, inv_freq = 1.0, 1.0 / freq
    return concentration, inv_freq.numpy()


def args_of(c):
    return c.head_dim, c.rope_theta, c.rope_scaling_factor, c.initial_context_length, c.rope_ntk_alpha, c.rope_ntk_beta


def test_ramp_bounds_of_gpt_oss_are_unrounded():
    c = GPT_OSS_20B
    low, high = rope.yarn_ramp_bounds(c.head_dim, c.rope_theta, c.initial_context_length,
                                      c.rope_ntk_alpha, c.rope_ntk_beta)
    assert (low, high) == pytest.approx(bounds_by_hand(64, 150000.0, 4096, 1.0, 32.0), rel=1e-15)
    assert low == pytest.approx(8.0928, abs=1e-4) and high == pytest.approx(17.3980, abs=1e-4)
    assert low != math.floor(low) and high != math.ceil(high)  # HF's truncate=True would round them


@pytest.mark.parametrize("config", [GPT_OSS_20B, TINY], ids=["20b", "tiny"])
def test_inv_freq_and_concentration_by_hand_and_by_gpt_oss(config):
    D, theta, factor, L, alpha, beta = args_of(config)
    inv_freq, conc = rope.inv_freq_and_concentration(D, theta, factor, L, alpha, beta)
    assert inv_freq.shape == (D // 2,)
    assert conc == pytest.approx(0.1 * math.log(32.0) + 1.0, rel=1e-15)
    np.testing.assert_allclose(inv_freq, inv_freq_by_hand(D, theta, factor, L, alpha, beta), rtol=1e-14, atol=0)
    conc_g, inv_g = gpt_oss_torch_formula(D, theta, factor, L, alpha, beta)
    assert conc == conc_g
    np.testing.assert_allclose(inv_freq, inv_g, rtol=1e-14, atol=0)


def test_no_scaling_is_plain_rope():
    inv_freq, conc = rope.inv_freq_and_concentration(16, 10000.0, 1.0, 4096, 1.0, 32.0)
    assert conc == 1.0
    np.testing.assert_allclose(inv_freq, [10000.0 ** (-2 * i / 16) for i in range(8)], rtol=1e-15)


def test_cos_sin_up_to_131072():
    D, theta, factor, L, alpha, beta = args_of(GPT_OSS_20B)
    inv_freq, conc = rope.inv_freq_and_concentration(D, theta, factor, L, alpha, beta)
    positions = np.array([0, 1, 127, 128, 4095, 4096, 65535, 100000, 131071, 131072])
    cos, sin = rope.cos_sin(positions, inv_freq, conc)
    assert cos.shape == sin.shape == (len(positions), D // 2)
    ref_inv = inv_freq_by_hand(D, theta, factor, L, alpha, beta)
    for t, p in enumerate(positions):
        for f in range(D // 2):
            angle = float(p) * ref_inv[f]
            # angle error: rtol 1e-14 of angles up to 1.3e5 rad is ~1e-9 rad
            tol = 1e-14 * abs(angle) * conc + 1e-15
            assert abs(cos[t, f] - conc * math.cos(angle)) <= tol, (p, f)
            assert abs(sin[t, f] - conc * math.sin(angle)) <= tol, (p, f)
    assert np.all(cos[0] == conc) and np.all(sin[0] == 0.0)


def rotate_by_loop(x, cos, sin):
    T, H, D = x.shape
    F = D // 2
    out = np.empty_like(x)
    for t in range(T):
        for h in range(H):
            for i in range(F):  # dimension i pairs with i + D/2
                a, b = x[t, h, i], x[t, h, i + F]
                out[t, h, i] = a * cos[t, i] - b * sin[t, i]
                out[t, h, i + F] = b * cos[t, i] + a * sin[t, i]
    return out


@settings(max_examples=25)
@given(st.integers(1, 5), st.integers(1, 3), st.sampled_from([2, 4, 8, 16]), st.integers(0, 131072 - 5),
       st.integers(0, 2**32 - 1))
def test_rotation_loop_and_norm_times_concentration(T, H, D, start, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, H, D))
    inv_freq, conc = rope.inv_freq_and_concentration(*args_of(TINY)) if D == 16 else \
        (1.0 / 150000.0 ** (np.arange(0, D, 2) / D), 1.0 + 0.1 * math.log(32.0))
    cos, sin = rope.cos_sin(np.arange(start, start + T), inv_freq, conc)
    y = rope.apply_rope(x, cos, sin)
    np.testing.assert_allclose(y, rotate_by_loop(x, cos, sin), rtol=0, atol=1e-14)
    # each (i, i + D/2) pair is rotated and scaled by the concentration, so norms scale by it too
    F = D // 2
    pair_x = np.hypot(x[..., :F], x[..., F:])
    pair_y = np.hypot(y[..., :F], y[..., F:])
    np.testing.assert_allclose(pair_y, conc * pair_x, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), conc * np.linalg.norm(x, axis=-1), rtol=1e-13)


@settings(max_examples=20)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_scores_depend_only_on_relative_position(p, q, shift, seed):
    """q.k after RoPE depends on the position difference only, times concentration**2."""
    rng = np.random.default_rng(seed)
    qv, kv = rng.standard_normal((1, 1, 16)), rng.standard_normal((1, 1, 16))
    inv_freq, conc = rope.inv_freq_and_concentration(*args_of(TINY))

    def score(pq, pk):
        cq, sq = rope.cos_sin(np.array([pq]), inv_freq, conc)
        ck, sk = rope.cos_sin(np.array([pk]), inv_freq, conc)
        return float(np.sum(rope.apply_rope(qv, cq, sq) * rope.apply_rope(kv, ck, sk)))

    assert score(p + shift, q + shift) == pytest.approx(score(p, q), rel=1e-9, abs=1e-9)
    assert score(p, p) == pytest.approx(conc**2 * float(np.sum(qv * kv)), rel=1e-12, abs=1e-12)
