"""Known wrong versions of each op, so that a failing check can say which trap a port fell into.

Each entry is (description, function with the op's signature in float64). When an op check fails, the kit
evaluates every variant on the same golden inputs; one that matches the port's output (within the check's
bound) is named in the failure message. SPEC.md "Traps" lists the same ones with the right answer.
"""
import math

import numpy as np

from reference import mxfp4
from reference.attention import sdpa
from reference.moe import SWIGLU_ALPHA
from reference.rope import cos_sin, yarn_ramp_bounds


def decode_variant(blocks, scales, high_first=False, bias=127, table=mxfp4.FP4_VALUES):
    lo, hi = blocks & 0x0F, blocks >> 4
    first, second = (hi, lo) if high_first else (lo, hi)
    codes = np.stack([first, second], axis=-1).reshape(*blocks.shape[:-1], 32)
    mult = np.ldexp(1.0, scales.astype(np.int32) - bias)
    return (table[codes] * mult[..., None]).reshape(*blocks.shape[:-2], -1)


_INT_TABLE = np.array([0, 1, 2, 3, 4, 5, 6, 7, -0.0, -1, -2, -3, -4, -5, -6, -7], dtype=np.float64)

MXFP4 = [
    ("nibble order: HIGH nibble taken as the earlier element (the release packs the LOW nibble first)",
     lambda b, s: decode_variant(b, s, high_first=True)),
    ("E8M0 bias 128 instead of 127 (scale = 2**(s - 127))", lambda b, s: decode_variant(b, s, bias=128)),
    ("E8M0 bias 126 instead of 127 (scale = 2**(s - 127))", lambda b, s: decode_variant(b, s, bias=126)),
    ("FP4 codes read as integers (E2M1 values are 0, 0.5, 1, 1.5, 2, 3, 4, 6)",
     lambda b, s: decode_variant(b, s, table=_INT_TABLE)),
]


def rms_variant(x, scale, eps, center=False, use_scale=True):
    if center:
        x = x - x.mean(-1, keepdims=True)
    y = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)
    return y * scale if use_scale else y


RMS_NORM = [
    ("RMSNorm eps 1e-6 instead of 1e-5", lambda x, s, eps: rms_variant(x, s, 1e-6)),
    ("RMSNorm eps 1e-5 added outside the square root", lambda x, s, eps: x / (np.sqrt(np.mean(x * x, -1, keepdims=True)) + eps) * s),
    ("LayerNorm (mean subtracted) instead of RMSNorm", lambda x, s, eps: rms_variant(x, s, eps, center=True)),
    ("RMSNorm scale not applied", lambda x, s, eps: rms_variant(x, s, eps, use_scale=False)),
]


def swiglu_variant(h, limit, split=False, plus_one=True, clamp=True, gate_both=False, alpha=SWIGLU_ALPHA):
    I = h.shape[-1] // 2
    gate, lin = (h[..., :I], h[..., I:]) if split else (h[..., 0::2], h[..., 1::2])
    if clamp:
        gate = np.clip(gate, -limit, limit) if gate_both else np.minimum(gate, limit)
        lin = np.clip(lin, -limit, limit)
    return gate / (1 + np.exp(-alpha * gate)) * (lin + (1.0 if plus_one else 0.0))


SWIGLU = [
    ("SwiGLU without the +1 on the linear half", lambda h, L: swiglu_variant(h, L, plus_one=False)),
    ("SwiGLU without the clamp (gate <= limit, linear in [-limit, limit])", lambda h, L: swiglu_variant(h, L, clamp=False)),
    ("SwiGLU gate clamped on both sides (gpt-oss clamps the gate above only)", lambda h, L: swiglu_variant(h, L, gate_both=True)),
    ("gate/linear split in halves (mlp1 INTERLEAVES them: gate = even columns, linear = odd)",
     lambda h, L: swiglu_variant(h, L, split=True)),
    ("gate/linear swapped (gate = even columns)", lambda h, L: swiglu_variant(np.stack([h[..., 1::2], h[..., 0::2]], -1).reshape(h.shape), L)),
    ("SiLU with alpha 1 instead of 1.702", lambda h, L: swiglu_variant(h, L, alpha=1.0)),
    ("SwiGLU limit fixed at 7.0 (gpt-oss's value) instead of the config's swiglu_limit (transformers 5.17 "
     "hard-codes it)", lambda h, L: swiglu_variant(h, 7.0)),
]


def route_softmax_all(logits, k):
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ids = np.argsort(-logits, -1, kind="stable")[:, :k]
    return ids, np.take_along_axis(p, ids, -1)


def route_softmax_all_renorm(logits, k):
    ids, w = route_softmax_all(logits, k)
    return ids, w / w.sum(-1, keepdims=True)


ROUTE = [
    ("softmax over ALL experts, then top-k (gpt-oss: softmax over the k chosen logits only)", route_softmax_all),
    ("softmax over all experts, top-k, renormalized", route_softmax_all_renorm),
    ("routing weights are the raw top-k logits (no softmax)",
     lambda l, k: (np.argsort(-l, -1, kind="stable")[:, :k], -np.sort(-l, -1)[:, :k])),
]


def rope_variant(pos, D, theta, f, icl, a, b, rounded=False, concentration=True, yarn=True, swapped=False, dynamic=False):
    if dynamic:  # plain RoPE at positions before the initial context, YaRN from there on
        short = (np.asarray(pos) < icl)[:, None]
        plain, scaled = rope_variant(pos, D, theta, f, icl, a, b, yarn=False), rope_variant(pos, D, theta, f, icl, a, b)
        return np.where(short, plain[0], scaled[0]), np.where(short, plain[1], scaled[1])
    if swapped:
        a, b = b, a
    freq = theta ** (np.arange(0, D, 2, dtype=np.float64) / D)
    if f > 1 and yarn:
        low, high = yarn_ramp_bounds(D, theta, icl, a, b)
        if rounded:
            low, high = math.floor(low), math.ceil(high)
        mask = 1 - np.clip((np.arange(D // 2) - low) / (high - low), 0, 1)
        inv = 1 / (f * freq) * (1 - mask) + 1 / freq * mask
        conc = 0.1 * math.log(f) + 1 if concentration else 1.0
    else:
        inv, conc = 1 / freq, 1.0
    return cos_sin(np.asarray(pos), inv, conc)


ROPE = [
    ("YaRN ramp bounds rounded to integers (floor/ceil, HF's truncate=True; gpt-oss keeps them unrounded)",
     lambda *p: rope_variant(*p, rounded=True)),
    ("YaRN concentration 0.1*ln(factor)+1 not applied to cos and sin", lambda *p: rope_variant(*p, concentration=False)),
    ("plain RoPE without YaRN scaling", lambda *p: rope_variant(*p, yarn=False)),
    ("YaRN ntk_alpha/ntk_beta swapped", lambda *p: rope_variant(*p, swapped=True)),
    ("YaRN only beyond initial_context_length (dynamic scaling; gpt-oss scales every position, so plain RoPE on a "
     "short prompt is wrong)", lambda *p: rope_variant(*p, dynamic=True)),
]


def attention_variant(q, k, v, sinks, sm, W, qp, kp, mode=""):
    T, H, D = q.shape
    K = k.shape[1]
    G = H // K
    if mode == "interleaved":  # query head h uses kv head h % K
        q = q.reshape(T, G, K, D).transpose(0, 2, 1, 3)
        sinks = np.asarray(sinks).reshape(G, K).T
    else:
        q, sinks = q.reshape(T, K, G, D), np.asarray(sinks).reshape(K, G)
    scale = sm * math.sqrt(D)
    if mode == "no_sink":
        sinks = np.full_like(sinks, -np.inf)
    if mode == "sink_scaled":
        sinks = sinks * sm
    win = {"": W, "interleaved": W, "no_sink": W, "sink_scaled": W, "window+1": W + 1 if W else 0,
           "window-1": max(W - 1, 1) if W else 0, "no_window": 0}[mode]
    out = sdpa(q * scale, k, v, sinks, qp, kp, win or None)
    if mode == "interleaved":
        out = out.transpose(0, 2, 1, 3)
    return out.reshape(T, H, D)


ATTENTION = [
    ("attention sinks ignored (the sink is one extra logit per head in the softmax denominator)",
     lambda *a: attention_variant(*a, mode="no_sink")),
    ("sink logit scaled by sm_scale (it is added unscaled, after q.k is scaled)", lambda *a: attention_variant(*a, mode="sink_scaled")),
    ("sliding window off by one: query sees W+1 keys (gpt-oss: positions p-W+1 .. p)", lambda *a: attention_variant(*a, mode="window+1")),
    ("sliding window off by one: query sees W-1 keys (gpt-oss: positions p-W+1 .. p)", lambda *a: attention_variant(*a, mode="window-1")),
    ("sliding window not applied", lambda *a: attention_variant(*a, mode="no_window")),
    ("GQA heads interleaved: query head h read kv head h % K (gpt-oss: kv head h // (H/K), heads grouped contiguously)", lambda *a: attention_variant(*a, mode="interleaved")),
]


def diagnose(variants, args, got, bound_fn) -> str:
    """The descriptions of the variants that `got` matches, as a message suffix ('' when none)."""
    hits = []
    for desc, fn in variants:
        try:
            want = fn(*args)
            if bound_fn(got, want):
                hits.append(desc)
        except Exception:  # noqa: BLE001 - a variant that cannot run on these inputs matches nothing
            continue
    return ("; matches known trap: " + " | ".join(hits)) if hits else ""


# -- harmony prompts: chat templates that go wrong in known ways (each renders the same conversation JSON) -------
def _prompt(conversation_json, drop_analysis=True):
    from harmony import Conversation, RenderConversationConfig, Role, load_harmony_encoding
    enc = load_harmony_encoding("HarmonyGptOss")
    return enc.render_conversation_for_completion(Conversation.from_json(conversation_json), Role.ASSISTANT,
                                                  RenderConversationConfig(auto_drop_analysis=drop_analysis))


def _history_returns(conversation_json):
    """The prompt with every assistant final answer closed by <|return|> instead of <|end|>."""
    from harmony import load_harmony_encoding
    from harmony.render import END, MESSAGE, RETURN, START
    enc = load_harmony_encoding("HarmonyGptOss")
    tokens, header, start = list(_prompt(conversation_json)), "", None
    for i, t in enumerate(tokens):
        if t == START:
            start = i
        elif t == MESSAGE and start is not None:
            header = enc.decode(tokens[start + 1:i])
        elif t == END and header.startswith("assistant") and header.endswith("<|channel|>final"):
            tokens[i] = RETURN
    return tokens


def _without_constrain(conversation_json):
    """The prompt with ` <|constrain|>json` dropped from tool calls' headers."""
    from harmony.render import CONSTRAIN, MESSAGE
    tokens, out, i = list(_prompt(conversation_json)), [], 0
    while i < len(tokens):
        if tokens[i] == CONSTRAIN:  # drop it, the words up to <|message|>, and the space before it
            if out and out[-1] == 220:
                out.pop()
            while i < len(tokens) and tokens[i] != MESSAGE:
                i += 1
            continue
        out.append(tokens[i])
        i += 1
    return out


HARMONY_RENDER = [
    ("earlier turns' analysis kept (an assistant turn's analysis is dropped once it ended in a final answer)",
     lambda c: _prompt(c, drop_analysis=False)),
    ("no generation prompt: the prompt must end with <|start|>assistant", lambda c: _prompt(c)[:-2]),
    ("earlier final answers closed with <|return|> (only the model's own last message ends so; in a prompt "
     "they end with <|end|>)", _history_returns),
    ("tool-call headers without <|constrain|>json (the message's content_type)", _without_constrain),
]
