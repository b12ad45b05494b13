"""reference/model.py: incremental decoding equals full-sequence logits past the sliding window, stage capture,
token validation, determinism, and an independent dense re-implementation of gpt-oss written here from the
model card (weights read with the `safetensors` library, plain loops per token and head) agreeing to 1e-10."""
import math

import numpy as np
import pytest
from safetensors.torch import load_file

from reference.model import Model, stage_names

from helpers import TINY, tiny_config, write_tiny

TOKENS = [5, 17, 0, 96, 42, 42, 7, 63, 18, 2, 77, 31, 50, 9]  # 14 tokens, sliding window 4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("model") / "tiny", seed=7)


@pytest.fixture(scope="module")
def model(ckpt):
    return Model(ckpt)


# -- incremental decoding, capture, determinism ----------------------------------------------------------

@pytest.mark.parametrize("chunks", [[14], [1] * 14, [5] + [1] * 9, [3, 4, 1, 6]])
def test_incremental_decode_equals_full_sequence(model, chunks):
    full = model.logits(TOKENS)
    assert full.shape == (14, TINY.vocab_size) and full.dtype == np.float64
    cache, parts, i = model.new_cache(), [], 0
    for n in chunks:
        parts.append(model.forward(TOKENS[i:i + n], cache))
        i += n
    assert cache.length == 14 and cache.layers[0].k.shape == (14, TINY.num_key_value_heads, TINY.head_dim)
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=0, atol=1e-12)


def test_capture_every_stage_in_order(model):
    stages = {}
    logits = model.forward(TOKENS, model.new_cache(), capture=stages)
    names = stage_names(TINY)
    assert names[0] == "embedding" and names[-2:] == ["norm", "logits"] and len(names) == 2 * TINY.num_hidden_layers + 3
    assert [k for k in stages if k in names] == names
    assert stages["logits"] is logits or np.array_equal(stages["logits"], logits)
    for name in names[:-1]:
        assert stages[name].shape == (14, TINY.hidden_size), name
    # every residual stage changes the stream; routing is captured beside each MoE stage
    for a, b in zip(names[:-2], names[1:-1]):
        assert not np.array_equal(stages[a], stages[b]), (a, b)
    for n in range(TINY.num_hidden_layers):
        ids = stages[f"block.{n}.mlp.expert_ids"]
        assert ids.shape == (14, TINY.experts_per_token) and ids.max() < TINY.num_experts
        np.testing.assert_allclose(stages[f"block.{n}.mlp.expert_weights"].sum(-1), 1.0, rtol=1e-14)


def test_deterministic(ckpt, model):
    a = model.logits(TOKENS)
    b = Model(ckpt).logits(TOKENS)
    assert np.array_equal(a, b) and a.tobytes() == b.tobytes()


def test_each_position_depends_only_on_its_prefix(model):
    full = model.logits(TOKENS)
    changed = model.logits(TOKENS[:9] + [1, 1, 1, 1, 1])
    # equal to float64 rounding, not bitwise: BLAS blocks a 9-row and a 14-row matmul differently (OpenBLAS on
    # AVX-512 machines gives 1e-15 differences), which is no causality leak; a leak moves rows by O(1)
    assert np.allclose(full[:9], changed[:9], rtol=0, atol=1e-12) and not np.allclose(full[9:], changed[9:])


# -- token validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens,words", [
    ([1, 2, 97], "token id 97 at position 2 is outside the vocabulary \\[0, 97\\)"),
    ([-1], "token id -1 at position 0 is outside"),
    ([], "empty"),
    ([1.5, 2], "must be integers"),
    (["a", "b"], "must be integers"),
    ([True, False], "must be integers"),
    ([[1, 2]], "1-D"),
    (np.array([3.0, np.nan]), "must be integers"),
    (np.array([2**40], dtype=np.int64), "token id 1099511627776"),
    ([1e20], "must be integers: token 1e\\+20 at position 0 is a float"),  # floats are refused, even integral
    (np.array([2**64 - 1], dtype=np.uint64), "token id 18446744073709551615"),
    ([1, 2**70], "token id 1180591620717411303424 at position 1"),  # a Python int beyond int64
])
def test_bad_tokens_are_named(model, tokens, words):
    with pytest.raises(ValueError, match=words):
        model.logits(tokens)


def test_numpy_ints_are_accepted_integral_floats_are_not(model):
    """reference/tokens.py's rule, shared with the engine (tests/test_ref_hardening.py has every case)."""
    want = model.logits([1, 2, 3])
    assert np.array_equal(model.logits(np.array([1, 2, 3], dtype=np.uint8)), want)
    with pytest.raises(ValueError, match="must be integers: token 1.0 at position 0 is a float64"):
        model.logits(np.array([1.0, 2.0, 3.0]))


# -- independent dense re-implementation ------------------------------------------------------------------

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def dense_gpt_oss(path, c, tokens, flip=None):
    """gpt-oss from its model card, one token and one head at a time. flip names one quirk to get wrong
    (to show this comparison notices it)."""
    W = {k: v.double().numpy() if v.is_floating_point() else v.numpy() for k, v in
         load_file(path / "model.safetensors").items()}
    H, K, D, A = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.experts_per_token
    G, F, T = H // K, D // 2, len(tokens)

    def rms(v, scale):
        return v / math.sqrt(sum(u * u for u in v) / len(v) + 1e-5) * scale

    def mxfp4(blocks, scales):  # (R, B, 16), (R, B) -> (R, B*32): byte j holds elements 2j (low), 2j+1 (high)
        R, B, _ = blocks.shape
        out = np.empty((R, B * 32))
        for r in range(R):
            for b in range(B):
                for j in range(16):
                    byte, unit = int(blocks[r, b, j]), 2.0 ** (int(scales[r, b]) - 127)
                    out[r, b * 32 + 2 * j] = E2M1[byte & 15] * unit
                    out[r, b * 32 + 2 * j + 1] = E2M1[byte >> 4] * unit
        return out

    factor = c.rope_scaling_factor
    conc = 1.0 if flip == "concentration" else 0.1 * math.log(factor) + 1
    low, high = (D / 2 * math.log(c.initial_context_length / (b * 2 * math.pi)) / math.log(c.rope_theta)
                 for b in (c.rope_ntk_beta, c.rope_ntk_alpha))
    inv = []
    for i in range(F):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        inv.append(c.rope_theta ** (-2 * i / D) * ((1 - ramp) + ramp / factor))

    def rot(vec, pos):
        out = np.empty(D)
        for i in range(F):
            cs, sn = conc * math.cos(pos * inv[i]), conc * math.sin(pos * inv[i])
            out[i], out[i + F] = vec[i] * cs - vec[i + F] * sn, vec[i + F] * cs + vec[i] * sn
        return out

    x = np.array([W["embedding.weight"][t] for t in tokens])
    for n in range(c.num_hidden_layers):
        a, m = f"block.{n}.attn.", f"block.{n}.mlp."
        windowed = (n % 2 == 1) if flip == "window_on_odd" else (n % 2 == 0)
        qkv = [W[a + "qkv.weight"] @ rms(x[t], W[a + "norm.scale"]) + W[a + "qkv.bias"] for t in range(T)]
        q = [[rot(qkv[t][h * D:(h + 1) * D], t) for h in range(H)] for t in range(T)]
        k = [[rot(qkv[t][(H + j) * D:(H + j + 1) * D], t) for j in range(K)] for t in range(T)]
        v = [[qkv[t][(H + K + j) * D:(H + K + j + 1) * D] for j in range(K)] for t in range(T)]
        new = x.copy()
        for t in range(T):
            o = []
            for h in range(H):
                j, sink = h // G, W[a + "sinks"][h]
                seen = [s for s in range(t + 1) if not windowed or t - s < c.sliding_window]
                scores = [float(q[t][h] @ k[s][j]) / math.sqrt(D) for s in seen]
                mx = max(scores + [sink])
                z = sum(math.exp(u - mx) for u in scores) + (0.0 if flip == "no_sink" else math.exp(sink - mx))
                o.append(sum(math.exp(u - mx) / z * v[s][j] for u, s in zip(scores, seen)))
            new[t] += W[a + "out.weight"] @ np.concatenate(o) + W[a + "out.bias"]
        x = new
        new = x.copy()
        for t in range(T):
            u = rms(x[t], W[m + "norm.scale"])
            logit = W[m + "gate.weight"] @ u + W[m + "gate.bias"]
            top = sorted(range(c.num_experts), key=lambda e: (-logit[e], e))[:A]
            z = sum(math.exp(logit[e] - logit[top[0]]) for e in top)
            for e in top:
                W1 = mxfp4(W[m + "mlp1_weight.blocks"][e], W[m + "mlp1_weight.scales"][e])
                W2 = mxfp4(W[m + "mlp2_weight.blocks"][e], W[m + "mlp2_weight.scales"][e])
                hdn = W1 @ u + W[m + "mlp1_bias"][e]
                act = np.empty(c.intermediate_size)
                for i in range(c.intermediate_size):
                    g = min(hdn[2 * i], c.swiglu_limit)
                    lin = min(max(hdn[2 * i + 1], -c.swiglu_limit), c.swiglu_limit)
                    act[i] = g / (1 + math.exp(-1.702 * g)) * (lin + (0.0 if flip == "no_plus_one" else 1.0))
                new[t] += math.exp(logit[e] - logit[top[0]]) / z * (W2 @ act + W[m + "mlp2_bias"][e])
        x = new
    return np.array([W["unembedding.weight"] @ rms(x[t], W["norm.scale"]) for t in range(T)])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """1 and 2 layers, 8 tokens (window 3), GQA 4 over 2, top-2 of 4 experts."""
    root = tmp_path_factory.mktemp("dense")
    out = {}
    for layers in (1, 2):
        c = tiny_config(num_hidden_layers=layers, sliding_window=3)
        out[layers] = (c, write_tiny(root / f"l{layers}", c, seed=layers))
    return out


@pytest.mark.parametrize("layers", [1, 2])
def test_independent_dense_implementation_agrees(small, layers):
    c, path = small[layers]
    tokens = TOKENS[:8]
    want = dense_gpt_oss(path, c, tokens)
    np.testing.assert_allclose(Model(path).logits(tokens), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("flip", ["concentration", "window_on_odd", "no_sink", "no_plus_one"])
def test_dense_check_notices_each_quirk(small, flip):
    """The 1e-10 agreement above is not vacuous: getting any one quirk wrong moves the logits by far more."""
    c, path = small[2]
    tokens = TOKENS[:8]
    wrong = dense_gpt_oss(path, c, tokens, flip=flip)
    assert np.max(np.abs(Model(path).logits(tokens) - wrong)) > 1e-4, flip


def test_unembedding_in_chunks_equals_one_matmul(model, monkeypatch):
    """The vocabulary is unembedded UNEMBED_CHUNK rows at a time; chunk edges must not drop or shift rows."""
    import reference.model as ref_model

    stages = {}
    model.forward(TOKENS, model.new_cache(), capture=stages)
    whole = stages["norm"] @ model.ckpt.get("unembedding.weight").T
    np.testing.assert_allclose(stages["logits"], whole, rtol=0, atol=1e-13)
    for chunk in (1, 10, 48, 96):  # 97 rows: many chunks, a 1-row tail, an exact fit short by one
        monkeypatch.setattr(ref_model, "UNEMBED_CHUNK", chunk)
        np.testing.assert_allclose(model.logits(TOKENS), whole, rtol=0, atol=1e-13)
