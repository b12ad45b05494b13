"""The conformance plugin (interface A): `factory(checkpoint_dir)` -> an impl the kit can certify.

`--impl optimized` resolves to `factory` (float32 on CPU), `optimized.adapter:factory_bf16` to bfloat16;
`factory_int8` / `factory_bf16_int8` round the experts' inputs to Q8_0 (`activations = "int8"`: the kit then
holds them to the classes float32+int8 / bfloat16+int8; the op checks run the released-precision ops).
Everything goes through the engine: logits = a fresh-cache prefill, decode_logits = prefill then one token
at a time through the KV cache, batch_logits = one ragged batched call. The op_* functions run the engine's
torch ops (numpy float64 in, the impl's dtype inside, numpy out).
"""
import numpy as np
import torch

from optimized import mxfp4, rope
from optimized.generate import Engine
from optimized.model import Model
from optimized.moe import route, swiglu
from optimized.norm import rms_norm
from optimized.ops import attention as attention_op

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


class OptimizedImpl:
    def __init__(self, checkpoint_dir: str, dtype: str = "fp32", device: str = "cpu", context: int = 4096,
                 activations: str | None = None):
        self.dtype, self.device, self.activations = dtype, device, activations  # the kit reads activations
        self.name = f"optimized ({dtype}{'+' + activations if activations else ''}, {device}, torch ops)"
        self._dt = DTYPES[dtype]
        self.engine = Engine(Model.load(checkpoint_dir, device, self._dt, activations=activations), context=context)
        self.config = self.engine.config

    def _t(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(self.device, self._dt)

    # -- model-level ---------------------------------------------------------------------------------------
    def logits(self, tokens):
        return _np(self.engine.logits(tokens))

    def decode_logits(self, tokens, prefill: int):
        (row,) = self.engine.check([tokens])
        if not 1 <= prefill <= len(row):
            raise ValueError(f"prefill={prefill} must be in [1, {len(row)}]")
        cache = self.engine.fresh_cache(1)
        out = [self.engine.run(cache, [row[:prefill]], all_logits=True)[0]]
        out += [self.engine.run(cache, [[t]]) for t in row[prefill:]]
        return _np(torch.cat(out))

    def batch_logits(self, batch):
        rows = self.engine.check(batch)
        return [_np(x) for x in self.engine.run(self.engine.fresh_cache(len(rows)), rows, all_logits=True)]

    def intermediates(self, tokens):
        (row,) = self.engine.check([tokens])
        m, stages = self.engine.model, {}
        cache = self.engine.fresh_cache(1)
        tok = torch.tensor([row], device=m.device)
        m.forward(tok, torch.arange(len(row), device=m.device)[None], cache, capture=stages)
        out = {}
        for k, v in stages.items():
            v = v[0] if v.dim() == 3 else v  # (1, T, ...) residual stages -> (T, ...); routing is already (T, ...)
            out[k] = v.cpu().numpy().astype(np.int64) if k.endswith("expert_ids") else _np(v)
        return out

    # -- text (the same harmony package the CLI renders chats with) --------------------------------------------
    def _encoding(self):
        if not hasattr(self, "_enc"):
            from harmony import HarmonyEncodingName, load_harmony_encoding
            self._enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        return self._enc

    def tokenize(self, text: str) -> list[int]:
        return self._encoding().encode(text, allowed_special=set(), disallowed_special=())  # specials as text

    def tokenize_special(self, text: str) -> list[int]:
        return self._encoding().encode(text, allowed_special="all")  # special-token names are the specials

    def detokenize(self, tokens) -> bytes:
        from harmony.tokenizer import get_tokenizer
        return get_tokenizer().decode_bytes(tokens)

    def render(self, conversation_json: str) -> list[int]:
        from harmony import Conversation, Role
        return self._encoding().render_conversation_for_completion(Conversation.from_json(conversation_json),
                                                                   Role.ASSISTANT)

    def parse(self, tokens) -> list[dict]:
        from harmony import Role
        return [m.to_dict() for m in self._encoding().parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)]

    def parse_stream(self, tokens) -> list[dict]:
        from harmony import build
        return build.stream(tokens)

    # -- op-level --------------------------------------------------------------------------------------
    def op_mxfp4_decode(self, blocks, scales):
        blocks, scales = (torch.as_tensor(np.asarray(a, np.uint8), device=self.device) for a in (blocks, scales))
        return _np(mxfp4.decode(blocks, scales, self._dt))

    def op_rms_norm(self, x, scale, eps):
        scale = torch.as_tensor(np.asarray(scale, np.float64), device=self.device).float()
        return _np(rms_norm(self._t(x), scale, eps))

    def op_swiglu(self, h, limit):
        return _np(swiglu(self._t(h), limit))

    def op_route(self, router_logits, k):
        ids, w = route(self._t(router_logits), k)
        return ids.cpu().numpy().astype(np.int64), _np(w)

    def op_rope_cos_sin(self, positions, head_dim, rope_theta, rope_scaling_factor, initial_context_length,
                        rope_ntk_alpha, rope_ntk_beta):
        inv_freq, conc = rope.inv_freq_and_concentration(head_dim, rope_theta, rope_scaling_factor,
                                                         initial_context_length, rope_ntk_alpha, rope_ntk_beta)
        cos, sin = rope.cos_sin(torch.as_tensor(np.asarray(positions, np.int64)), inv_freq, conc)
        return _np(cos), _np(sin)

    def op_attention(self, q, k, v, sinks, sm_scale, window, q_pos, k_pos):
        qp = torch.as_tensor(np.asarray(q_pos, np.int64), device=self.device)[None]
        kp = torch.as_tensor(np.asarray(k_pos, np.int64), device=self.device)[None]
        sinks = torch.as_tensor(np.asarray(sinks, np.float64), device=self.device).float()
        q, k, v = (self._t(a)[None] for a in (q, k, v))
        o = attention_op(q, k, v, sinks, float(sm_scale), int(window), qp, kp)
        return _np(o[0])


def factory(checkpoint_dir: str) -> OptimizedImpl:
    return OptimizedImpl(checkpoint_dir, "fp32")


def factory_bf16(checkpoint_dir: str) -> OptimizedImpl:
    return OptimizedImpl(checkpoint_dir, "bf16")


def factory_int8(checkpoint_dir: str) -> OptimizedImpl:  # the experts' inputs in Q8_0: class float32+int8
    return OptimizedImpl(checkpoint_dir, "fp32", activations="int8")


def factory_bf16_int8(checkpoint_dir: str) -> OptimizedImpl:  # class bfloat16+int8 (llama.cpp's on a bf16 GGUF)
    return OptimizedImpl(checkpoint_dir, "bf16", activations="int8")


def factory_cuda(checkpoint_dir: str) -> OptimizedImpl:  # --impl optimized.adapter:factory_cuda on a GPU machine
    return OptimizedImpl(checkpoint_dir, "fp32", "cuda")


def factory_cuda_bf16(checkpoint_dir: str) -> OptimizedImpl:
    return OptimizedImpl(checkpoint_dir, "bf16", "cuda")
