"""`--impl reference`: the reference itself behind the plugin protocol, every capability implemented.

It must pass every check with zero measured error on the machine that generated the golden data (and
float64-rounding error elsewhere); it is also the base the wrong-ports catalogue (tests/wrong_ports/) bends.
Reference functions are looked up on their modules at call time, so a test may patch one of them.
"""
import math

import numpy as np

from reference import attention, model, moe, mxfp4, norm, rope


class ReferenceImpl:
    name = "reference (NumPy, float64)"
    dtype = "float64"
    device = "cpu"

    def __init__(self, checkpoint_dir: str):
        self.model = model.Model(checkpoint_dir)

    def logits(self, tokens):
        return self.model.logits(tokens)

    def decode_logits(self, tokens, prefill: int):
        cache = self.model.new_cache()
        rows = [self.model.forward(tokens[:prefill], cache)]
        rows += [self.model.forward([t], cache) for t in tokens[prefill:]]
        return np.concatenate(rows)

    def batch_logits(self, batch):
        return [self.model.logits(t) for t in batch]

    def intermediates(self, tokens):
        stages = {}
        self.model.forward(tokens, self.model.new_cache(), capture=stages)
        return stages

    # op-level functions
    def op_mxfp4_decode(self, blocks, scales):
        return mxfp4.decode(np.asarray(blocks, dtype=np.uint8), np.asarray(scales, dtype=np.uint8))

    def op_rms_norm(self, x, scale, eps):
        return norm.rms_norm(x, scale, eps)

    def op_swiglu(self, h, limit):
        return moe.swiglu(h, limit)

    def op_route(self, router_logits, k):
        return moe.route(router_logits, int(k))

    def op_rope_cos_sin(self, positions, head_dim, rope_theta, rope_scaling_factor, initial_context_length,
                        rope_ntk_alpha, rope_ntk_beta):
        inv, conc = rope.inv_freq_and_concentration(int(head_dim), rope_theta, rope_scaling_factor,
                                                    initial_context_length, rope_ntk_alpha, rope_ntk_beta)
        return rope.cos_sin(np.asarray(positions, dtype=np.int64), inv, conc)

    def op_attention(self, q, k, v, sinks, sm_scale, window, q_pos, k_pos):
        T, H, D = q.shape
        K = k.shape[1]
        if not math.isclose(sm_scale, 1 / math.sqrt(D), rel_tol=1e-15):
            q = q * (sm_scale * math.sqrt(D))  # the reference's sdpa scales by 1/sqrt(D)
        out = attention.sdpa(q.reshape(T, K, H // K, D), k, v, np.asarray(sinks).reshape(K, H // K),
                             np.asarray(q_pos), np.asarray(k_pos), int(window) or None)
        return out.reshape(T, H, D)

    # text: the reference tokenizer (pure Python) and this project's harmony renderer
    def tokenize(self, text):
        from reference.tokenizer import get_tokenizer
        return get_tokenizer().encode_ordinary(text)

    def tokenize_special(self, text):
        from reference.tokenizer import get_tokenizer
        return get_tokenizer().encode(text, allowed_special="all")

    def detokenize(self, tokens):
        from reference.tokenizer import get_tokenizer
        return get_tokenizer().decode_bytes(tokens)

    def render(self, conversation_json):
        from harmony import Conversation, Role, load_harmony_encoding
        enc = load_harmony_encoding("HarmonyGptOss")
        return enc.render_conversation_for_completion(Conversation.from_json(conversation_json), Role.ASSISTANT)

    def parse(self, tokens):
        from harmony import Role, load_harmony_encoding
        enc = load_harmony_encoding("HarmonyGptOss")
        return [m.to_dict() for m in enc.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)]


    def parse_stream(self, tokens):
        from harmony import build
        return build.stream(tokens)


def factory(checkpoint_dir: str) -> ReferenceImpl:
    return ReferenceImpl(checkpoint_dir)
