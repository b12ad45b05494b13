"""reference/moe.py and norm.py against explicit loops: routing (top-k by logit then lower id, softmax over
the k only, weights sum to 1), SwiGLU (interleaved columns, clamp, alpha 1.702, +1), the MoE block as a
dense loop over tokens and their k experts, and RMSNorm (eps 1e-5)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.moe import SWIGLU_ALPHA, moe_block, route, swiglu
from reference.norm import EPS, rms_norm


def route_by_loop(logits, A):
    ids, weights = [], []
    for row in logits:
        order = sorted(range(len(row)), key=lambda e: (-row[e], e))[:A]  # highest first, ties: lower id
        z = [math.exp(row[e] - row[order[0]]) for e in order]
        ids.append(order)
        weights.append([x / sum(z) for x in z])
    return np.array(ids), np.array(weights)


@settings(max_examples=60)
@given(T=st.integers(1, 5), E=st.integers(1, 8), data=st.data())
def test_route_matches_loop_including_ties(T, E, data):
    A = data.draw(st.integers(1, E))
    # small integers make exact ties common; sometimes spread them out as floats
    vals = data.draw(st.lists(st.integers(-3, 3), min_size=T * E, max_size=T * E))
    scale = data.draw(st.sampled_from([1.0, 0.37, 5.5]))
    logits = np.array(vals, dtype=np.float64).reshape(T, E) * scale
    ids, w = route(logits, A)
    want_ids, want_w = route_by_loop(logits, A)
    assert ids.shape == w.shape == (T, A)
    assert np.array_equal(ids, want_ids)
    np.testing.assert_allclose(w, want_w, rtol=1e-14)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-14)
    assert np.all(np.diff(w, axis=-1) <= 0)  # descending logit order


def test_ties_go_to_the_lower_id():
    ids, w = route(np.array([[1.0, 5.0, 5.0, 5.0, 0.0]]), 2)
    assert ids.tolist() == [[1, 2]] and w.tolist() == [[0.5, 0.5]]


def test_softmax_is_over_the_k_selected_only():
    logits = np.array([[3.0, 1.0, 2.0, 0.0]])
    ids, w = route(logits, 2)
    assert ids.tolist() == [[0, 2]]
    e = math.exp(-1.0)
    np.testing.assert_allclose(w[0], [1 / (1 + e), e / (1 + e)], rtol=1e-15)  # not divided by all four


def swiglu_by_loop(h, limit, alpha=1.702):
    out = np.empty(h.shape[:-1] + (h.shape[-1] // 2,))
    for idx in np.ndindex(*h.shape[:-1]):
        for i in range(h.shape[-1] // 2):
            g, lin = h[idx + (2 * i,)], h[idx + (2 * i + 1,)]  # column 2i gate, 2i+1 linear
            g = min(g, limit)  # gate: clamped from above only
            lin = max(-limit, min(lin, limit))  # linear: both sides
            out[idx + (i,)] = g * (1 / (1 + math.exp(-alpha * g))) * (lin + 1)
    return out


@settings(max_examples=40)
@given(st.integers(1, 4), st.integers(1, 6), st.sampled_from([7.0, 1.0, 3.5]), st.integers(0, 2**32 - 1))
def test_swiglu_matches_loop(T, I, limit, seed):
    h = np.random.default_rng(seed).standard_normal((T, 2 * I)) * 6  # wide enough to hit both clamps
    np.testing.assert_allclose(swiglu(h, limit), swiglu_by_loop(h, limit), rtol=1e-14, atol=1e-300)


def test_swiglu_hand_values():
    assert SWIGLU_ALPHA == 1.702
    sig = lambda x: 1 / (1 + math.exp(-1.702 * x))
    h = np.array([[2.0, 0.0,     # gate 2, linear 0: the +1 keeps 2*sig(3.404)
                   10.0, 3.0,    # gate clamped to 7, linear 3
                   -10.0, 3.0,   # gate -10 NOT clamped from below
                   1.0, -9.0,    # linear clamped to -7: (1 - 7)
                   0.0, 100.0]])  # gate 0 -> 0 whatever the linear half
    want = [2 * sig(2), 7 * sig(7) * 4, -10 * sig(-10) * 4, 1 * sig(1) * -6, 0.0]
    np.testing.assert_allclose(swiglu(h, 7.0)[0], want, rtol=1e-15, atol=1e-300)


def test_rms_norm_matches_loop():
    rng = np.random.default_rng(3)
    x, scale = rng.standard_normal((4, 7)) * 3, rng.standard_normal(7)
    assert EPS == 1e-5
    out = rms_norm(x, scale)
    for t in range(4):
        ms = sum(v * v for v in x[t]) / 7
        for c in range(7):
            assert out[t, c] == pytest.approx(x[t, c] / math.sqrt(ms + 1e-5) * scale[c], rel=1e-14, abs=1e-15)
    tiny = rms_norm(np.full((1, 4), 1e-4), np.ones(4))  # eps dominates: 1e-4 / sqrt(1e-8 + 1e-5)
    np.testing.assert_allclose(tiny, 1e-4 / math.sqrt(1e-8 + 1e-5), rtol=1e-14)
    with pytest.raises(AssertionError):
        rms_norm(x, np.ones(6))


def moe_by_loop(x, w, experts, A, limit):
    T, C = x.shape
    out = x.copy()
    for t in range(T):
        ms = sum(v * v for v in x[t]) / C
        n = np.array([x[t, c] / math.sqrt(ms + 1e-5) * w["norm.scale"][c] for c in range(C)])
        logits = [float(n @ w["gate.weight"][e]) + w["gate.bias"][e] for e in range(len(experts))]
        ids, weights = route_by_loop(np.array([logits]), A)
        for e, p in zip(ids[0], weights[0]):
            W1, b1, W2, b2 = experts[e]
            h = swiglu_by_loop(W1 @ n + b1, limit)
            out[t] += p * (W2 @ h + b2)
    return out


@settings(max_examples=15)
@given(T=st.integers(1, 5), E=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_moe_block_matches_dense_loop(T, E, seed, data):
    A = data.draw(st.integers(1, E))
    C, I = 6, 3
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, C))
    w = {"norm.scale": 1 + 0.1 * rng.standard_normal(C), "gate.weight": rng.standard_normal((E, C)),
         "gate.bias": rng.standard_normal(E)}
    experts = [(rng.standard_normal((2 * I, C)) * 2, rng.standard_normal(2 * I), rng.standard_normal((C, I)),
                rng.standard_normal(C)) for _ in range(E)]
    asked = []

    def expert(e):
        asked.append(e)
        return experts[e]

    trace = {}
    got = moe_block(x, w, expert, A, 7.0, trace)
    np.testing.assert_allclose(got, moe_by_loop(x, w, experts, A, 7.0), rtol=1e-12, atol=1e-12)
    # lazily: each routed expert decoded once, the others never
    assert sorted(asked) == sorted(set(trace["expert_ids"].ravel().tolist()))
    assert trace["router_logits"].shape == (T, E) and trace["expert_weights"].shape == (T, A)
