"""reference/attention.py against an explicit loop (sink as one extra logit, causal, window: q - k < W),
hand-made sink and window cases, the GQA head mapping h -> h // G, the qkv column layout, and
Config.window_of_layer (even layers only)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.attention import sdpa, split_qkv

from helpers import TINY, tiny_config


def attention_by_loop(q, k, v, sinks, q_pos, k_pos, window):
    """q (T, H, D), k/v (S, K, D), sinks (H,): one query head at a time, plain Python softmax."""
    T, H, D = q.shape
    S, K, _ = k.shape
    G = H // K
    out = np.zeros((T, H, D))
    for t in range(T):
        for h in range(H):
            kv = h // G  # query head h reads kv head h // G
            logits, rows = [], []
            for s in range(S):
                visible = k_pos[s] <= q_pos[t] and (window is None or q_pos[t] - k_pos[s] < window)
                if visible:
                    logits.append(sum(q[t, h, d] * k[s, kv, d] for d in range(D)) / math.sqrt(D))
                    rows.append(s)
            m = max(logits + [sinks[h]])
            z = sum(math.exp(x - m) for x in logits) + math.exp(sinks[h] - m)  # the sink joins the sum ...
            for x, s in zip(logits, rows):
                out[t, h] += math.exp(x - m) / z * v[s, kv]  # ... but brings no value
    return out


def run_sdpa(q, k, v, sinks, q_pos, k_pos, window):
    T, H, D = q.shape
    K = k.shape[1]
    o = sdpa(q.reshape(T, K, H // K, D), k, v, sinks.reshape(K, H // K), q_pos, k_pos, window)
    return o.reshape(T, H, D)


@settings(max_examples=40)
@given(T=st.integers(1, 6), past=st.integers(0, 5), K=st.integers(1, 3), G=st.integers(1, 3),
       D=st.sampled_from([2, 4, 8]), window=st.one_of(st.none(), st.integers(1, 8)), seed=st.integers(0, 2**32 - 1))
def test_sdpa_matches_loop(T, past, K, G, D, window, seed):
    """T new queries after `past` cached positions (past 0 = prefill, T 1 = decode)."""
    rng = np.random.default_rng(seed)
    H, S = K * G, past + T
    q, k, v = rng.standard_normal((T, H, D)), rng.standard_normal((S, K, D)), rng.standard_normal((S, K, D))
    sinks = 2 * rng.standard_normal(H)
    q_pos, k_pos = np.arange(past, S), np.arange(S)
    got = run_sdpa(q, k, v, sinks, q_pos, k_pos, window)
    np.testing.assert_allclose(got, attention_by_loop(q, k, v, sinks, q_pos, k_pos, window), rtol=1e-12, atol=1e-13)


def case(T=5, K=1, G=1, D=4, seed=0):
    rng = np.random.default_rng(seed)
    H = K * G
    return rng.standard_normal((T, H, D)), rng.standard_normal((T, K, D)), rng.standard_normal((T, K, D)), np.arange(T)


def test_huge_sink_takes_all_the_mass():
    q, k, v, pos = case()
    out = run_sdpa(q, k, v, np.array([1e4]), pos, pos, None)
    assert np.max(np.abs(out)) < 1e-300


def test_minus_infinite_sink_is_plain_causal_softmax():
    q, k, v, pos = case()
    out = run_sdpa(q, k, v, np.array([-np.inf]), pos, pos, None)
    for t in range(5):
        s = q[t, 0] @ k[: t + 1, 0].T / 2.0  # sqrt(4)
        p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        np.testing.assert_allclose(out[t, 0], p @ v[: t + 1, 0], rtol=1e-13, atol=1e-15)


def test_sink_is_one_unscaled_logit():
    """One key, q.k known: weight = e^(qk/sqrt(D)) / (e^(qk/sqrt(D)) + e^sink), the sink not divided by sqrt(D)."""
    q = np.array([[[2.0, 0.0, 0.0, 0.0]]])
    k = np.array([[[3.0, 0.0, 0.0, 0.0]]])  # q.k / sqrt(4) = 3
    v = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    out = run_sdpa(q, k, v, np.array([1.0]), np.array([0]), np.array([0]), None)
    w = math.exp(3.0) / (math.exp(3.0) + math.exp(1.0))
    np.testing.assert_allclose(out[0, 0], w * v[0, 0], rtol=1e-15)


def test_window_one_sees_only_itself():
    q, k, v, pos = case(T=6)
    out = run_sdpa(q, k, v, np.array([-np.inf]), pos, pos, 1)
    np.testing.assert_allclose(out[:, 0], v[:, 0], rtol=1e-15)
    out = run_sdpa(q, k, v, np.array([0.5]), pos, pos, 1)  # with a sink: a scaled copy of its own value
    for t in range(6):
        s = q[t, 0] @ k[t, 0] / 2.0
        np.testing.assert_allclose(out[t, 0], v[t, 0] * math.exp(s) / (math.exp(s) + math.exp(0.5)), rtol=1e-13)


def test_window_w_sees_exactly_the_last_w_positions():
    """Make each value a one-hot of its position: the output's support is the visible set."""
    T, W = 9, 3
    q = np.zeros((T, 1, T))
    k = np.zeros((T, 1, T))
    v = np.eye(T)[:, None, :]
    out = run_sdpa(q, k, v, np.array([-np.inf]), np.arange(T), np.arange(T), W)
    for t in range(T):
        seen = set(np.nonzero(out[t, 0] > 0)[0].tolist())
        assert seen == set(range(max(0, t - W + 1), t + 1)), t
        np.testing.assert_allclose(out[t, 0][sorted(seen)], 1.0 / len(seen), rtol=1e-15)


def test_gqa_head_h_reads_kv_head_h_div_g():
    """4 query heads over 2 kv heads, window 1 and no sink: head h outputs exactly v of kv head h // 2."""
    T, K, G, D = 3, 2, 2, 4
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((T, K * G, D)), rng.standard_normal((T, K, D)), rng.standard_normal((T, K, D))
    out = run_sdpa(q, k, v, np.full(K * G, -np.inf), np.arange(T), np.arange(T), 1)
    for h in range(K * G):
        np.testing.assert_allclose(out[:, h], v[:, h // G], rtol=1e-15)


def test_split_qkv_columns_are_q_heads_then_k_then_v():
    H, K, D, T = 4, 2, 3, 2
    qkv = np.arange(T * D * (H + 2 * K), dtype=np.float64).reshape(T, -1)
    q, k, v = split_qkv(qkv, H, K, D)
    assert q.shape == (T, K, H // K, D) and k.shape == v.shape == (T, K, D)
    for h in range(H):
        assert np.array_equal(q[:, h // (H // K), h % (H // K)], qkv[:, h * D:(h + 1) * D])
    for j in range(K):
        assert np.array_equal(k[:, j], qkv[:, (H + j) * D:(H + j + 1) * D])
        assert np.array_equal(v[:, j], qkv[:, (H + K + j) * D:(H + K + j + 1) * D])


def test_sliding_window_on_even_layers_only():
    c = tiny_config(num_hidden_layers=5, sliding_window=7)
    assert [c.window_of_layer(n) for n in range(5)] == [7, None, 7, None, 7]
    assert TINY.window_of_layer(0) == TINY.sliding_window


def test_sdpa_rejects_mismatched_shapes():
    q, k, v, pos = case(T=3, K=2, G=1)
    with pytest.raises(AssertionError):
        sdpa(q.reshape(3, 2, 1, 4), k[:, :1], v, np.zeros((2, 1)), pos, pos, None)
    with pytest.raises(AssertionError):
        sdpa(q.reshape(3, 2, 1, 4), k, v, np.zeros((1, 1)), pos, pos, None)
