"""A catalogue of deliberately wrong gpt-oss ports: the reference with ONE planted bug each.

Each port is the reference impl (conformance/impls/reference.py) with one reference function replaced, inside
its own calls only (unittest.mock, entered per call), so every capability (ops, logits, intermediates)
carries the same bug. The bugs are written here independently of conformance/traps.py (which the kit uses to
name them), so the kit's diagnosis is tested, not assumed. Each entry: factory, the strings the kit's failure
messages must contain, and the checks to run (a subset keeps the catalogue fast).

Use one directly:  pytest conformance/ --impl tests/wrong_ports/catalogue.py:swiglu_no_plus1
"""
import contextlib
import math
from unittest import mock

import numpy as np

from conformance.impls.reference import ReferenceImpl
from reference import attention, config, model, moe, mxfp4, norm, rope

_sdpa, _route, _swiglu, _decode = attention.sdpa, moe.route, moe.swiglu, mxfp4.decode
_rms, _apply_rope, _ramp, _invfreq = norm.rms_norm, attention.apply_rope, rope.yarn_ramp_bounds, rope.inv_freq_and_concentration


class WrongPort:
    """The reference with `patches` [(object, attribute, replacement)] active in every call it makes."""

    dtype = "float64"
    device = "cpu"

    def __init__(self, checkpoint_dir, bug: str, patches, hide=()):
        self.name = f"wrong port: {bug}"
        self._patches, self._hide = patches, set(hide)
        with self._patched():
            self._inner = ReferenceImpl(checkpoint_dir)

    @contextlib.contextmanager
    def _patched(self):
        with contextlib.ExitStack() as stack:
            for obj, attr, value in self._patches:
                stack.enter_context(mock.patch.object(obj, attr, value))
            yield

    def __getattr__(self, name):
        if name.startswith("_") or name in self._hide:
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kw):
            with self._patched():
                return attr(*args, **kw)
        return call


# -- the planted bugs, each an independent re-implementation of the wrong idea --------------------------
def sdpa_variant(sink="column", window_shift=0, interleaved=False):
    def sdpa(q, k, v, sinks, q_pos, k_pos, window):
        T, K, G, D = q.shape
        if interleaved:  # query head h = k*G + g read as using kv head h % K
            flat = q.reshape(T, K * G, D)
            qi = flat.reshape(T, G, K, D).transpose(0, 2, 1, 3)
            si = sinks.reshape(K * G).reshape(G, K).T
            out = _sdpa(qi, k, v, si, q_pos, k_pos, window)  # (T, K, G, D) in the regrouped order
            return out.transpose(0, 2, 1, 3).reshape(T, K, G, D)
        w = None if window is None else window + window_shift
        if sink == "column":
            return _sdpa(q, k, v, sinks, q_pos, k_pos, w)
        s = np.einsum("tkgd,skd->kgts", q, k) / math.sqrt(D)
        vis = k_pos[None, :] <= q_pos[:, None]
        if w is not None:
            vis &= q_pos[:, None] - k_pos[None, :] < w
        if sink == "bias":  # sink added to every score instead of being its own column
            s = s + sinks[:, :, None, None]
        s = np.where(vis, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p = np.nan_to_num(p / p.sum(-1, keepdims=True))  # sink == "ignored": a plain softmax over the keys
        return np.einsum("kgts,skd->tkgd", p, v)
    return sdpa


def route_softmax_all(logits, A):
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    ids, _ = _route(logits, A)
    return ids, np.take_along_axis(p, ids, -1)


def swiglu_variant(plus_one=1.0, clamp=True, split=False):
    def swiglu(h, limit, alpha=moe.SWIGLU_ALPHA):
        I = h.shape[-1] // 2
        g, lin = (h[..., :I], h[..., I:]) if split else (h[..., 0::2], h[..., 1::2])
        if clamp:
            g, lin = np.minimum(g, limit), np.clip(lin, -limit, limit)
        return g / (1.0 + np.exp(-alpha * g)) * (lin + plus_one)
    return swiglu


def decode_high_nibble_first(blocks, scales):
    swapped = ((blocks & 0x0F) << 4 | (blocks >> 4)).astype(np.uint8)
    return _decode(swapped, scales)


def decode_bias_128(blocks, scales):
    return _decode(blocks, scales) / 2.0


def rms_eps_1e6(x, scale, eps=1e-5):
    return _rms(x, scale, 1e-6)  # a port that hard-codes the wrong eps and ignores the argument


def rope_rotate_interleaved(x, cos, sin):
    T, *_, D = x.shape
    c, s = cos.reshape(T, *(1,) * (x.ndim - 2), D // 2), sin.reshape(T, *(1,) * (x.ndim - 2), D // 2)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x1 * c - x2 * s, x2 * c + x1 * s
    return out


def ramp_rounded(*a):
    low, high = _ramp(*a)
    return float(math.floor(low)), float(math.ceil(high))


def no_concentration(*a):
    inv, _ = _invfreq(*a)
    return inv, 1.0


def window_on_odd_layers(self, layer):
    return self.sliding_window if layer % 2 == 1 else None


RMS_MODULES = [norm, attention, moe]
OPS = "conformance/test_ops.py"
TINY = "conformance/test_model.py::test_logits[tiny]"
GQA2 = "conformance/test_model.py::test_logits[gqa2-top2]"  # the golden checkpoint with swiglu_limit 3

# name -> (bug, patches, hidden capabilities, expected message fragments, checks to run)
BUGS = {
    "yarn_rounded": ("YaRN ramp bounds rounded", [(rope, "yarn_ramp_bounds", ramp_rounded)], (),
                     ["rounded to integers", "logits/tiny"], [OPS + "::test_op_rope", TINY]),
    "no_concentration": ("YaRN concentration missing", [(rope, "inv_freq_and_concentration", no_concentration),
                                                        (model, "inv_freq_and_concentration", no_concentration)], (),
                         ["concentration", "logits/tiny"], [OPS + "::test_op_rope", TINY]),
    "sink_ignored": ("attention sinks ignored", [(attention, "sdpa", sdpa_variant(sink="ignored"))], (),
                     ["sinks ignored", "first diverging stage: block.0.attn"], [OPS + "::test_op_attention", TINY]),
    "sink_as_bias": ("sink added to every score", [(attention, "sdpa", sdpa_variant(sink="bias"))], (),
                     ["attention/", "first diverging stage: block.0.attn"], [OPS + "::test_op_attention", TINY]),
    "window_off_by_one": ("window sees W+1 keys", [(attention, "sdpa", sdpa_variant(window_shift=1))], (),
                          ["W+1 keys", "first diverging stage: block.0.attn"], [OPS + "::test_op_attention", TINY]),
    "window_wrong_layers": ("sliding window on odd layers", [(config.Config, "window_of_layer", window_on_odd_layers)],
                            (), ["first diverging stage: block.0.attn", "sliding window 8"], [OPS, TINY]),
    "gqa_interleaved": ("GQA head h uses kv head h % K", [(attention, "sdpa", sdpa_variant(interleaved=True))], (),
                        ["GQA heads interleaved", "first diverging stage: block.0.attn"], [OPS + "::test_op_attention", TINY]),
    "route_softmax_all": ("softmax over all experts", [(moe, "route", route_softmax_all)], (),
                          ["softmax over ALL experts", "first diverging stage: block.0.mlp"], [OPS + "::test_op_route", TINY]),
    "swiglu_no_plus1": ("SwiGLU without +1", [(moe, "swiglu", swiglu_variant(plus_one=0.0))], (),
                        ["without the +1", "block.0.mlp"], [OPS + "::test_op_swiglu", TINY]),
    "swiglu_no_clamp": ("SwiGLU without clamp", [(moe, "swiglu", swiglu_variant(clamp=False))], (),
                        ["without the clamp"], [OPS + "::test_op_swiglu", TINY]),
    "swiglu_split_halves": ("gate/linear split in halves", [(moe, "swiglu", swiglu_variant(split=True))], (),
                            ["split in halves", "block.0.mlp"], [OPS + "::test_op_swiglu", TINY]),
    # transformers 5.17's GptOssExperts: self.limit = 7.0 whatever the config says (5.25 reads swiglu_limit)
    "swiglu_limit_fixed": ("SwiGLU limit hard-coded to 7", [(moe, "swiglu", lambda h, limit, alpha=moe.SWIGLU_ALPHA:
                                                             swiglu_variant()(h, 7.0, alpha))], (),
                           ["limit fixed at 7.0", "first diverging stage: block.0.mlp"],
                           [OPS + "::test_op_swiglu", GQA2]),
    "nibble_order": ("high nibble first", [(mxfp4, "decode", decode_high_nibble_first)], (),
                     ["nibble order", "first diverging stage: block.0.mlp"], [OPS + "::test_op_mxfp4", TINY]),
    "e8m0_bias": ("E8M0 bias 128", [(mxfp4, "decode", decode_bias_128)], (),
                  ["E8M0 bias 128", "block.0.mlp"], [OPS + "::test_op_mxfp4", TINY]),
    "rms_eps": ("RMSNorm eps 1e-6", [(m, "rms_norm", rms_eps_1e6) for m in RMS_MODULES], (),
                ["eps 1e-6"], [OPS + "::test_op_rms_norm"]),
    "rope_not_on_k": ("RoPE applied to q only", [(attention, "apply_rope",
                                                  lambda x, c, s: _apply_rope(x, c, s) if x.ndim == 4 else x)], (),
                      ["first diverging stage: block.0.attn"], [TINY]),
    "rope_interleaved_pairs": ("RoPE rotates pairs (2i, 2i+1)", [(attention, "apply_rope", rope_rotate_interleaved)], (),
                               ["first diverging stage: block.0.attn"], [TINY]),
    "no_final_norm": ("unembedding without the final norm", [(model, "rms_norm", lambda x, s, eps=1e-5: x)], (),
                      ["first diverging stage: norm"], [TINY]),
    # a port exposing nothing but logits still fails, and is told it cannot be localized
    "bare_swiglu_no_plus1": ("SwiGLU without +1, logits only", [(moe, "swiglu", swiglu_variant(plus_one=0.0))],
                             ("intermediates", "decode_logits", "batch_logits", "op_swiglu", "op_mxfp4_decode",
                              "op_rms_norm", "op_route", "op_rope_cos_sin", "op_attention"),
                             ["logits/tiny", "has no intermediates()"], [TINY]),
}


class RingBufferEverywhere(ReferenceImpl):
    """A KV cache that keeps only the last `sliding_window` keys in EVERY layer (the full-attention layers
    too): full-sequence logits are right, incremental decoding past the window is wrong."""

    name = "wrong port: ring buffer on every layer"

    def decode_logits(self, tokens, prefill):
        cache = self.model.new_cache()
        W = self.model.config.sliding_window
        rows = [self.model.forward(tokens[:prefill], cache)]
        for t in tokens[prefill:]:
            for layer in cache.layers:
                layer.k, layer.v, layer.positions = layer.k[-W:], layer.v[-W:], layer.positions[-W:]
            rows.append(self.model.forward([t], cache))
        return np.concatenate(rows)


class BatchPadsRight(ReferenceImpl):
    """Batches by left-padding short rows with token 0 and no attention mask: short rows attend to padding."""

    name = "wrong port: unmasked left padding in batches"

    def batch_logits(self, batch):
        T = max(len(t) for t in batch)
        return [self.model.logits([0] * (T - len(t)) + list(t))[T - len(t):] for t in batch]


class YarnOnlyBeyondContext(ReferenceImpl):
    """Dynamic YaRN: plain RoPE (no frequency scaling, no concentration) at positions before
    initial_context_length, YaRN from there on. gpt-oss's YaRN table applies at every position, so every prompt
    shorter than 4096 tokens is run with the wrong angles."""

    name = "wrong port: YaRN only beyond the initial context"

    def __init__(self, checkpoint_dir):
        super().__init__(checkpoint_dir)
        c = self.model.config
        self._params = (c.head_dim, c.rope_theta, c.rope_scaling_factor, c.initial_context_length, c.rope_ntk_alpha,
                        c.rope_ntk_beta)

    @staticmethod
    def _table(positions, D, theta, f, icl, a, b):
        pos = np.asarray(positions, dtype=np.int64)
        scaled = rope.cos_sin(pos, *_invfreq(int(D), theta, f, icl, a, b))
        plain = rope.cos_sin(pos, *_invfreq(int(D), theta, 1.0, icl, a, b))  # factor 1: no YaRN
        short = (pos < icl)[:, None]
        return np.where(short, plain[0], scaled[0]), np.where(short, plain[1], scaled[1])

    def op_rope_cos_sin(self, positions, head_dim, rope_theta, rope_scaling_factor, initial_context_length,
                        rope_ntk_alpha, rope_ntk_beta):
        return self._table(positions, head_dim, rope_theta, rope_scaling_factor, initial_context_length,
                           rope_ntk_alpha, rope_ntk_beta)

    def _with_table(self, method, *args):
        with mock.patch.object(model, "cos_sin", lambda pos, inv, conc: self._table(pos, *self._params)):
            return getattr(super(), method)(*args)

    def logits(self, tokens):
        return self._with_table("logits", tokens)

    def intermediates(self, tokens):
        return self._with_table("intermediates", tokens)


class DenseDownProjUntransposed(ReferenceImpl):
    """Reads a dense checkpoint's down_proj (E, I, C) as mlp2's (E, C, I) by reshaping, not transposing: no shape
    error wherever I == C (gpt-oss-20b and -120b: 2880 both), every expert's output wrong. Certified with
    --layout hf-dense (the original layout has no dense experts)."""

    name = "wrong port: dense down_proj reshaped, not transposed"

    def __init__(self, checkpoint_dir):
        super().__init__(checkpoint_dir)
        ckpt, read = self.model.ckpt, self.model.ckpt.expert
        assert ckpt.experts == "dense", "run with --layout hf-dense"

        def expert(layer, e):
            W1, b1, W2, b2 = read(layer, e)
            return W1, b1, np.ascontiguousarray(W2.T).reshape(W2.shape), b2  # W2.T: as stored, (I, C)
        ckpt.expert = expert


def _harmony():
    from harmony import load_harmony_encoding
    return load_harmony_encoding("HarmonyGptOss")


class RenderKeepsAnalysis(ReferenceImpl):
    """A chat template that renders every message it is given: earlier turns' analysis stays in the prompt."""

    name = "wrong port: harmony prompt keeps earlier analysis"

    def render(self, conversation_json):
        from harmony import Conversation, RenderConversationConfig, Role
        keep = RenderConversationConfig(auto_drop_analysis=False)
        return _harmony().render_conversation_for_completion(Conversation.from_json(conversation_json), Role.ASSISTANT,
                                                             keep)


class RenderHistoryReturn(ReferenceImpl):
    """A text template that closes every assistant final answer with <|return|>, as the model ends its own."""

    name = "wrong port: <|return|> in the prompt's history"

    def render(self, conversation_json):
        import re
        enc = _harmony()
        text = enc.decode(super().render(conversation_json))
        text = re.sub(r"(<\|start\|>assistant<\|channel\|>final<\|message\|>.*?)<\|end\|>", r"\1<|return|>", text,
                      flags=re.S)
        return enc.encode(text, allowed_special="all")


class RenderNoGenerationPrompt(ReferenceImpl):
    """A template without the generation prompt: the conversation, but no `<|start|>assistant` after it."""

    name = "wrong port: prompt without <|start|>assistant"

    def render(self, conversation_json):
        from harmony import Conversation
        return _harmony().render_conversation(Conversation.from_json(conversation_json))


class RenderDropsConstrain(ReferenceImpl):
    """A template that ignores messages' content_type: tool calls lose ` <|constrain|>json`."""

    name = "wrong port: tool calls without <|constrain|>"

    def render(self, conversation_json):
        from harmony import Conversation, Role
        conv = Conversation.from_json(conversation_json)
        for m in conv.messages:
            m.content_type = None
        return _harmony().render_conversation_for_completion(conv, Role.ASSISTANT)


class RenderDropsWhatItCannot(ReferenceImpl):
    """A template that renders the messages it can and silently leaves out the rest (a user message carrying
    system content, a tool message with no name, an unknown role)."""

    name = "wrong port: template that drops unrenderable messages"

    def render(self, conversation_json):
        import json
        from harmony import Conversation, Role
        enc, kept = _harmony(), []
        for m in json.loads(conversation_json)["messages"]:
            try:
                enc.render_conversation(Conversation.from_json(json.dumps({"messages": [m]})))
            except Exception:  # noqa: BLE001 - the planted bug: skip it, say nothing
                continue
            kept.append(m)
        conv = Conversation.from_json(json.dumps({"messages": kept}))
        return enc.render_conversation_for_completion(conv, Role.ASSISTANT)


class ParseLenient(ReferenceImpl):
    """A parser that never fails: malformed model output becomes no messages, silently."""

    name = "wrong port: lenient harmony parser"

    def parse(self, tokens):
        try:
            return super().parse(tokens)
        except Exception:  # noqa: BLE001 - the planted bug
            return []


class ParseDropsRecipient(ReferenceImpl):
    """A parser that reads channel and content but not `to=`: tool calls look like ordinary messages."""

    name = "wrong port: harmony parser ignores recipients"

    def parse(self, tokens):
        return [{k: v for k, v in m.items() if k != "recipient"} for m in super().parse(tokens)]


class StreamDecodesEachToken(ReferenceImpl):
    """A streaming parser that turns each content token into text on its own: a character split across tokens
    comes out as U+FFFD pieces instead of once, whole, when its last byte arrives."""

    name = "wrong port: streaming deltas decoded token by token"

    def parse_stream(self, tokens):
        from harmony.render import CALL, END, MESSAGE, RETURN
        enc, out, in_content = _harmony(), [], False
        for t, state in zip(tokens, super().parse_stream(tokens)):
            if t == MESSAGE:
                in_content = True
            elif t in (END, RETURN, CALL):
                in_content = False
            elif in_content:
                state = dict(state, delta=enc.decode([t]))
            out.append(state)
        return out


class TokenizeSpecialWholeString(ReferenceImpl):
    """A tokenizer that pre-tokenizes the whole text, then turns pieces that spell a special's name into the
    special: whitespace before a special merges with the stretch's end differently, and `<<|message|>>` (one
    punctuation piece) never becomes the special."""

    name = "wrong port: specials found after pre-tokenizing"

    def tokenize_special(self, text):
        from reference.tokenizer import SPECIAL_TOKENS, get_tokenizer
        tok, out = get_tokenizer(), []
        for piece in tok._pattern.findall(text):
            out += [SPECIAL_TOKENS[piece]] if piece in SPECIAL_TOKENS else tok.encode_ordinary(piece)
        return out


class DetokenizeLossy(ReferenceImpl):
    """A detokenizer that decodes each call to text (U+FFFD for a character split across tokens)."""

    name = "wrong port: lossy detokenizer"

    def detokenize(self, tokens):
        return _harmony().decode(tokens)


TEXT = "conformance/test_text.py::"
CLASSES = {
    "kv_ring_buffer_everywhere": (RingBufferEverywhere, ["decode/tiny"], ["conformance/test_model.py::test_decode[tiny]"]),
    "batch_unmasked_padding": (BatchPadsRight, ["batch/tiny"], ["conformance/test_model.py::test_batch[tiny]"]),
    "yarn_only_beyond_context": (YarnOnlyBeyondContext, ["YaRN only beyond initial_context_length", "logits/tiny",
                                                         "first diverging stage: block.0.attn"],
                                 [OPS + "::test_op_rope", TINY]),
    "dense_down_proj_untransposed": (DenseDownProjUntransposed, ["logits/tiny", "first diverging stage: block.0.mlp"],
                                     [TINY, "--layout", "hf-dense"]),
    "render_keeps_analysis": (RenderKeepsAnalysis, ["harmony_render", "earlier turns' analysis kept"],
                              [TEXT + "test_harmony_render"]),
    "render_history_return": (RenderHistoryReturn, ["harmony_render", "closed with <|return|>"],
                              [TEXT + "test_harmony_render"]),
    "render_no_generation_prompt": (RenderNoGenerationPrompt, ["harmony_render", "no generation prompt"],
                                    [TEXT + "test_harmony_render"]),
    "render_drops_constrain": (RenderDropsConstrain, ["harmony_render", "without <|constrain|>json"],
                               [TEXT + "test_harmony_render"]),
    "render_drops_unrenderable": (RenderDropsWhatItCannot,
                                  ["harmony_render_rejects", "system content in a user message"],
                                  [TEXT + "test_harmony_render_rejects_unrenderable", TEXT + "test_harmony_render"]),
    "parse_lenient": (ParseLenient, ["harmony_parse_rejects", "accepted, 0 messages"],
                      [TEXT + "test_harmony_parse_rejects_malformed", TEXT + "test_harmony_parse"]),
    "parse_drops_recipient": (ParseDropsRecipient,
                              ["harmony_parse", "recipient None, expected 'functions.get_weather'"],
                              [TEXT + "test_harmony_parse"]),
    "stream_decodes_each_token": (StreamDecodesEachToken, ["harmony_stream", "delta '\ufffd', expected None"],
                                  [TEXT + "test_harmony_parse_stream"]),
    "tokenize_special_whole_string": (TokenizeSpecialWholeString, ["tokenizer_special", "first difference at token"],
                                      [TEXT + "test_tokenizer_special"]),
    "detokenize_lossy": (DetokenizeLossy, ["detokenize", "first difference at byte"], [TEXT + "test_detokenize"]),
}


def _make(name):
    if name in BUGS:
        bug, patches, hide, _, _ = BUGS[name]
        return lambda checkpoint_dir: WrongPort(checkpoint_dir, bug, patches, hide)
    cls = CLASSES[name][0]
    return lambda checkpoint_dir: cls(checkpoint_dir)


CATALOGUE = {name: (BUGS[name][3], BUGS[name][4]) for name in BUGS} | {n: (v[1], v[2]) for n, v in CLASSES.items()}
globals().update({name: _make(name) for name in CATALOGUE})  # each name is a factory: --impl FILE:NAME
