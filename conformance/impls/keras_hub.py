"""`--impl keras-hub`: Google's KerasHub `GptOssBackbone` (Keras 3 on its torch backend), an independent port.

KerasHub reads the HF layout through its own converter: `GptOssBackbone.from_preset(folder)` sees a transformers
config.json and runs `keras_hub/src/utils/transformers/convert_gpt_oss.py`, which dequantizes the MXFP4 experts
into dense (E, C, 2I) / (E, I, C) matrices (hf_layout.py gives it the HF folder from an original checkpoint; that
converter reads only MXFP4 experts, so --layout hf-dense is not for this port). The backbone is built in the dtype
asked for (float32 by `factory`, bfloat16 by `factory_bf16`) and wrapped in `GptOssCausalLM` for the unembedding
and the KV cache; only the backbone is loaded, no tokenizer, nothing downloaded. KERAS_BACKEND=torch is set here,
before Keras is first imported (a process that imported Keras on another backend keeps that one: the adapter says
so). Needs keras-hub and keras without TensorFlow: `pip install -e '.[keras-hub]'` then
`pip install --no-deps keras-hub==0.32.0` (its tensorflow-text requirement pulls TensorFlow, which the torch backend
never imports). Capabilities: logits; decode_logits (`GptOssCausalLM.call_with_cache` on the cache that its
`generate` builds: the prompt padded to the full length, then one token per call at its index); batch_logits (right
padding with `padding_mask`, KerasHub's own convention); intermediates (the decoder layer's sub-layers called in its
own order: the residual after attention and after the MoE, the experts its router scored, the final norm).
What the kit found is in conformance/README.md.
"""
import importlib.util
import os

import numpy as np

from conformance.impls.hf_layout import hf_folder

PIP = "pip install -e '.[keras-hub]' && pip install --no-deps keras-hub==0.32.0 (its TensorFlow is not needed)"


def preflight():
    """keras-hub and keras, checked once when --impl is resolved: a missing package is one line."""
    missing = [m for m in ("keras", "keras_hub", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"the keras-hub adapter needs {', '.join(missing)}: {PIP}")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import keras
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"the keras-hub adapter runs Keras on torch, but this process already imported Keras "
                           f"with the {keras.backend.backend()} backend: set KERAS_BACKEND=torch")
    return keras


class KerasHubImpl:
    device = "cpu"

    def __init__(self, checkpoint_dir: str, dtype: str = "float32"):
        keras = _keras()
        import keras_hub
        import torch
        from keras_hub.models import GptOssBackbone, GptOssCausalLM

        self.keras, self.torch = keras, torch
        self.backbone = GptOssBackbone.from_preset(str(hf_folder(checkpoint_dir)), dtype=dtype)
        self.lm = GptOssCausalLM(backbone=self.backbone, preprocessor=None)
        self.dtype = dtype
        self.name = f"KerasHub {keras_hub.__version__} GptOssBackbone (Keras {keras.__version__}, torch, {dtype})"

    def _np(self, x) -> np.ndarray:
        return np.asarray(self.keras.ops.convert_to_numpy(self.keras.ops.cast(x, "float32")), dtype=np.float64)

    def _inputs(self, rows, T):
        ids = np.zeros((len(rows), T), "int32")
        mask = np.zeros((len(rows), T), "int32")
        for i, t in enumerate(rows):  # right padding: KerasHub's preprocessors pad at the end
            ids[i, :len(t)] = t
            mask[i, :len(t)] = 1
        return {"token_ids": ids, "padding_mask": mask}

    def logits(self, tokens):
        with self.torch.no_grad():
            return self._np(self.lm(self._inputs([tokens], len(tokens)))[0])

    def decode_logits(self, tokens, prefill: int):
        ids = np.zeros((1, len(tokens)), "int32")
        ids[0, :prefill] = tokens[:prefill]  # as GptOssCausalLM.generate_step: the prompt padded to the full length
        with self.torch.no_grad():
            hidden, cache = self.lm._build_cache(ids)
            rows = [self.backbone.token_embedding(hidden[:, :prefill], reverse=True)[0]]
            for i in range(prefill, len(tokens)):
                logits, _, cache = self.lm.call_with_cache(np.array([[tokens[i]]], "int32"), cache, i)
                rows.append(logits[0])
        return np.concatenate([self._np(r) for r in rows])

    def batch_logits(self, batch):
        with self.torch.no_grad():
            out = self.lm(self._inputs(batch, max(len(t) for t in batch)))
        return [self._np(out[i, :len(t)]) for i, t in enumerate(batch)]

    def intermediates(self, tokens):
        ops, bb = self.keras.ops, self.backbone
        mask = np.ones((1, len(tokens)), "int32")
        out = {}
        with self.torch.no_grad():
            x = bb.token_embedding(np.array([list(tokens)], "int32"))
            out["embedding"] = x[0]
            for n, layer in enumerate(bb.transformer_layers):  # GptOssTransformerDecoder.call, stage by stage
                attn_mask = layer._compute_self_attention_mask(x, mask, None, None, None)
                x = x + layer.self_attention_layer(hidden_states=layer.input_layernorm(x), attention_mask=attn_mask)
                out[f"block.{n}.attn"] = x[0]
                moe, scores = layer.sparse_moe_block(layer.post_attention_layernorm(x))
                x = x + moe
                out[f"block.{n}.mlp"] = x[0]
                out[f"block.{n}.mlp.expert_ids"] = ops.top_k(scores, k=layer.top_k)[1]  # its nonzero scores
            out["norm"] = bb.layer_norm(x)[0]
            out["logits"] = bb.token_embedding(bb.layer_norm(x), reverse=True)[0]
        return {k: (ops.convert_to_numpy(v) if "expert_ids" in k else self._np(v)) for k, v in out.items()}


def factory(checkpoint_dir: str) -> KerasHubImpl:
    return KerasHubImpl(checkpoint_dir)


def factory_bf16(checkpoint_dir: str) -> KerasHubImpl:
    """The same port in bfloat16, the checkpoint's own dtype."""
    return KerasHubImpl(checkpoint_dir, "bfloat16")
