"""`--impl mlx`: Apple's mlx-lm (`mlx_lm.models.gpt_oss`) on MLX's CPU backend, an independent third-party port.

mlx-lm reads the HF layout through its own `mlx_lm.utils.load_model` (hf_layout.py gives it one from an original
checkpoint): the MXFP4 experts stay packed and run through MLX's mxfp4 quantized matmuls, everything else is
cast to the dtype asked for (float32 by `factory`, bfloat16 by `factory_bf16`, the checkpoint's own). Only the
model is loaded, no tokenizer; nothing is downloaded. Needs `mlx-lm` and, on Linux, `mlx[cpu]`
(`pip install -e '.[mlx]'`). Capabilities: logits; decode_logits (mlx-lm's own caches, `model.make_cache()`: a
KVCache per full layer, a RotatingKVCache of the window's size per sliding one); batch_logits (left padding
through its BatchKVCache / BatchRotatingKVCache, positions counted from each row's first token); intermediates
(the library's sub-modules called in its TransformerBlock's order: the residual after each attention and MoE
block, the chosen experts, the final norm). What the kit found is in conformance/README.md.
"""
import importlib.util
import os

import numpy as np

from conformance.impls.hf_layout import hf_folder


def preflight():
    """mlx-lm and an MLX backend, checked once when --impl is resolved: a missing package is one line."""
    if importlib.util.find_spec("mlx_lm") is None or importlib.util.find_spec("mlx") is None:
        raise ImportError("the mlx adapter needs mlx-lm and MLX's CPU backend: pip install 'mlx-lm==0.32.2' "
                          "'mlx[cpu]==0.32.4' (or pip install -e '.[mlx]')")
    try:
        import mlx.core  # noqa: F401 - the wheel without a backend (no mlx[cpu] on Linux) fails here
    except ImportError as e:
        raise ImportError(f"the mlx adapter cannot import mlx.core ({e}): pip install 'mlx[cpu]==0.32.4'") from None


class MlxImpl:
    device = "cpu"

    def __init__(self, checkpoint_dir: str, dtype: str = "float32"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.utils import load_model

        self.mx = mx
        mx.set_default_device(mx.cpu)
        self.model, self.config = load_model(hf_folder(checkpoint_dir))
        self.model.set_dtype(getattr(mx, dtype))  # floating parameters only: the MXFP4 codes and scales stay
        self.dtype = dtype
        self.name = f"mlx-lm {mlx_lm.__version__} gpt_oss (MLX {mx.__version__}, cpu, {dtype})"

    def _np(self, x) -> np.ndarray:
        x = x.astype(self.mx.float32)  # numpy has no bfloat16; float32 holds a bf16 exactly
        self.mx.eval(x)
        return np.array(x, dtype=np.float64)

    def logits(self, tokens):
        return self._np(self.model(self.mx.array([list(tokens)]))[0])

    def decode_logits(self, tokens, prefill: int):
        mx = self.mx
        cache = self.model.make_cache()
        rows = [self.model(mx.array([list(tokens[:prefill])]), cache=cache)[0]]
        for t in tokens[prefill:]:
            rows.append(self.model(mx.array([[t]]), cache=cache)[0])
        return self._np(mx.concatenate(rows))

    def batch_logits(self, batch):
        mx = self.mx
        from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache
        T = max(len(t) for t in batch)
        pad = [T - len(t) for t in batch]
        W = self.model.args.sliding_window
        cache = [BatchKVCache(pad) if lt == "full_attention" else BatchRotatingKVCache(W, pad)
                 for lt in self.model.model.layer_types]
        ids = mx.array([[0] * p + list(t) for p, t in zip(pad, batch)])  # left padding: every row ends at column T
        out = self.model(ids, cache=cache)
        return [self._np(out[i, p:]) for i, p in enumerate(pad)]

    def intermediates(self, tokens):
        mx = self.mx
        from mlx_lm.models.base import create_attention_mask
        from mlx_lm.models.gpt_oss import mlx_topk
        inner = self.model.model
        x = inner.embed_tokens(mx.array([list(tokens)]))
        masks = {"full_attention": create_attention_mask(x, None),
                 "sliding_attention": create_attention_mask(x, None, window_size=inner.window_size)}
        out = {"embedding": x[0]}
        for n, (layer, lt) in enumerate(zip(inner.layers, inner.layer_types)):
            x = x + layer.self_attn(layer.input_layernorm(x), masks[lt], None)
            out[f"block.{n}.attn"] = x[0]
            h = layer.post_attention_layernorm(x)
            out[f"block.{n}.mlp.expert_ids"] = mlx_topk(layer.mlp.router(h), k=layer.mlp.num_experts_per_tok)[1][0]
            x = x + layer.mlp(h)
            out[f"block.{n}.mlp"] = x[0]
        x = inner.norm(x)
        out["norm"] = x[0]
        out["logits"] = self.model.lm_head(x)[0]
        return {k: (np.array(v) if "expert_ids" in k else self._np(v)) for k, v in out.items()}


def factory(checkpoint_dir: str) -> MlxImpl:
    return MlxImpl(checkpoint_dir)


def factory_bf16(checkpoint_dir: str) -> MlxImpl:
    """The same port in bfloat16, the checkpoint's own dtype."""
    return MlxImpl(checkpoint_dir, "bfloat16")
