"""`--impl transformers`: Hugging Face transformers' GptOssForCausalLM, an independent third-party port.

transformers reads the HF layout: an original-layout checkpoint is read through its cached HF-layout copy, an
HF-layout one (MXFP4 or dense experts) as it is (hf_layout.py). transformers dequantizes MXFP4 on CPU and runs in
float32 (`dtype` below). Needs `transformers` >= 4.56 and `accelerate`; nothing is downloaded.
Capabilities: logits, decode_logits (HF's own KV cache, sliding-window layers included), batch_logits (left
padding with an attention mask), intermediates (the residual stream after each decoder layer).
"""
import importlib.util
import json
import os
from pathlib import Path

from conformance.impls.hf_layout import hf_folder, to_hf  # noqa: F401 - to_hf: imported from here by older code


def preflight():
    """The adapter's hard dependencies, checked by the kit when it resolves --impl, before any check: a missing
    package is one line naming what to install, not the same error in every check (accelerate: device_map)."""
    missing = [m for m in ("torch", "transformers", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"the transformers adapter needs {', '.join(missing)}: pip install {' '.join(missing)}")


def load_hf_model(path, dtype, **kw):
    """GptOssForCausalLM from an HF-layout checkpoint, on CPU, its MXFP4 experts dequantized at load (dense, in
    dtype); a checkpoint with dense experts (no quantization_config) is loaded as it is. Dequantizing is asked
    for explicitly: transformers 5.25 keeps them packed on CPU too when triton >= 3.5 and its
    `kernels` dependency are installed, and fetches Triton kernels from the Hub for that
    (kernels-community/gpt-oss-triton-kernels), which fails offline; earlier versions dequantized on CPU."""
    import transformers
    from transformers import GptOssForCausalLM, Mxfp4Config
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    if "quantization_config" in json.loads((Path(path) / "config.json").read_text()):
        kw = {"quantization_config": Mxfp4Config(dequantize=True), **kw}
    model = GptOssForCausalLM.from_pretrained(path, device_map="cpu", **{key: dtype}, **kw)
    # quirk: transformers 5.17 dequantizes the experts to bf16 whatever dtype is asked (5.25 honours it), and its
    # grouped_mm then rounds the activations to the weights' bf16: a "float32" model off by ~1e-2. Widening them
    # to the dtype asked for is exact (every MXFP4 value times its power-of-two scale is a bf16).
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


class TransformersImpl:
    device = "cpu"

    def __init__(self, checkpoint_dir: str, dtype: str = "float32"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        import transformers

        self.torch = torch
        hf_dir = hf_folder(checkpoint_dir)
        self.dtype = dtype
        self.model = load_hf_model(hf_dir, getattr(torch, dtype), attn_implementation="eager")
        self.model.eval()
        self.name = f"HF transformers {transformers.__version__} GptOssForCausalLM (eager, {dtype})"
        self.n_layers = self.model.config.num_hidden_layers

    def _run(self, ids, **kw):
        with self.torch.no_grad():
            return self.model(input_ids=self.torch.tensor([list(ids)]), **kw)

    def logits(self, tokens):
        return self._run(tokens).logits[0].double().numpy()

    def decode_logits(self, tokens, prefill: int):
        from transformers import DynamicCache
        cache = DynamicCache(config=self.model.config)
        out = self._run(tokens[:prefill], past_key_values=cache, use_cache=True)
        rows = [out.logits[0]]
        for i in range(prefill, len(tokens)):
            pos = self.torch.tensor([i])
            with self.torch.no_grad():
                out = self.model(input_ids=self.torch.tensor([[tokens[i]]]), past_key_values=out.past_key_values,
                                 use_cache=True, cache_position=pos)
            rows.append(out.logits[0])
        return self.torch.cat(rows).double().numpy()

    def batch_logits(self, batch):
        torch = self.torch
        T = max(len(t) for t in batch)
        ids = torch.zeros((len(batch), T), dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for i, t in enumerate(batch):  # left padding: every row ends at the last column
            ids[i, T - len(t):] = torch.tensor(t)
            mask[i, T - len(t):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        return [out[i, T - len(t):].double().numpy() for i, t in enumerate(batch)]

    def intermediates(self, tokens):
        hs = self._run(tokens, output_hidden_states=True).hidden_states
        # hidden_states: the embedding, then the output of each decoder layer; the last one is after the final
        # norm in transformers' gpt_oss, so the last layer's own residual is not exposed
        out = {"embedding": hs[0][0].double().numpy()}
        for n in range(1, self.n_layers):
            out[f"block.{n - 1}.mlp"] = hs[n][0].double().numpy()
        out["norm"] = hs[self.n_layers][0].double().numpy()
        return out


def factory(checkpoint_dir: str) -> TransformersImpl:
    return TransformersImpl(checkpoint_dir)


def factory_bf16(checkpoint_dir: str) -> TransformersImpl:
    """The same port in bfloat16: an independent bf16 implementation, which the bf16 bounds must admit."""
    return TransformersImpl(checkpoint_dir, "bfloat16")
