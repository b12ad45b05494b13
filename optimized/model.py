"""The engine's forward pass, wiring the pieces: embedding, blocks of (attention, MoE), final norm, unembedding.

Mirrors reference/model.py; differs in what a fast engine needs: weights live on the device (experts packed),
a batch of rows with per-token positions (-1 = padding), a preallocated KV cache (cache.py), a backend for
the ops (ops.py), and logits only where asked (the last token of each row when generating).
Not here: sampling, stop tokens, CUDA graphs (generate.py); input checks (generate.py checks before any work).

Legend: B rows, T tokens per row (padded), C hidden, V vocabulary.
"""
import torch

from optimized import checkpoint as ckpt_mod
from optimized.attention import attention_block
from optimized.cache import Cache
from optimized.moe import check_activations, moe_block
from optimized.linear import project
from optimized.norm import norm_for
from optimized.ops import get_backend
from optimized.rope import cos_sin, inv_freq_and_concentration


def _check_activations(activations: str | None, device: torch.device, backend: str, dense: bool = False):
    """The experts' input rounding `activations` runs in the torch backend's CPU kernels on packed experts
    (moe.py's op); anything else is one clear error."""
    if activations is None:
        return
    check_activations(activations, device)
    if backend != "torch" or dense:
        raise ValueError(f"activations={activations!r} needs the torch backend and packed MXFP4 experts "
                         f"(backend {backend!r}{', dense experts' if dense else ''})")


class Model:
    def __init__(self, weights: ckpt_mod.Weights, backend: str = "torch", activations: str | None = None):
        self.weights, self.config = weights, weights.config
        self.ops = get_backend(backend)
        c = self.config
        self.device, self.dtype = weights.tensors["embedding.weight"].device, weights.dtype
        _check_activations(activations, self.device, backend, weights.experts == "dense")
        self.activations = activations  # "int8": the experts' inputs in Q8_0 (not the released precision, opt-in)
        inv_freq, self.concentration = inv_freq_and_concentration(
            c.head_dim, c.rope_theta, c.rope_scaling_factor, c.initial_context_length, c.rope_ntk_alpha,
            c.rope_ntk_beta)
        self.inv_freq = inv_freq.to(self.device)
        self._rope_tables = {}  # context -> (cos, sin) of every position (rope_table)

    def rope_table(self, context: int):
        """cos, sin (context, D/2) float32 for every position a cache of `context` slots holds, with cos_sin's math
        (the same numbers), made once per context size: a step's angles are then two gathers instead of ~9 small
        kernels (float64 angles, cos, sin, the concentration, casts). Made by the first forward for a cache, i.e.
        outside any CUDA-graph capture (the engine's warm-up comes first)."""
        table = self._rope_tables.get(context)
        if table is None:
            table = cos_sin(torch.arange(context, device=self.device), self.inv_freq, self.concentration)
            self._rope_tables[context] = table
        return table

    @classmethod
    def load(cls, path, device="cpu", dtype=torch.bfloat16, backend: str = "torch",
             activations: str | None = None) -> "Model":
        _check_activations(activations, torch.device(device), backend)  # before a checkpoint is read
        return cls(ckpt_mod.load(path, device, dtype), backend, activations)

    def new_cache(self, batch: int, context: int) -> Cache:
        return Cache(self.config, batch, context, self.device, self.dtype)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, cache: Cache, last: torch.Tensor | None = None,
                decode: bool = False, static: bool = False, capture: dict | None = None) -> torch.Tensor:
        """tokens, pos (B, T) int64 on the device (pos -1 = padding; its token id must still be valid).
        Returns float32 logits (B, T, V), or (B, V) at index `last` (B,) of each row when given (then, with T > 1
        and no capture, the last layer's attention and MoE run for those tokens alone: ~1/L of a prefill's work).
        The caller advances cache.lengths (generate.py), so a failed call leaves them untouched."""
        B, T = tokens.shape
        assert tuple(pos.shape) == (B, T) and B == cache.batch, (tokens.shape, pos.shape, cache.batch)
        w, c = self.weights, self.config
        # a position the cache cannot hold: an error here on CPU; on CUDA (no host sync) the gather's bounds assert
        if pos.device.type == "cpu" and pos.numel() and int(pos.max()) >= cache.context:
            raise ValueError(f"position {int(pos.max())} is beyond the cache's context of {cache.context} "
                             f"(a full layer holds positions 0..{cache.context - 1})")
        cos_t, sin_t = self.rope_table(cache.context)
        p = pos.clamp(min=0)
        cos, sin = cos_t[p], sin_t[p]  # (B, T, D/2): a gather each (positions < cache.context: the cache's rule)
        x = w.tensors["embedding.weight"][tokens].to(self.dtype)  # (B, T, C); bf16-stored rows widen exactly
        stages = capture if capture is not None else None
        if stages is not None:
            stages["embedding"] = x
        L = c.num_hidden_layers
        # only the last logits wanted: the last layer's attention and MoE run for those tokens alone (its keys and
        # values still go into the cache); its other tokens' outputs would only feed logits nobody reads
        prune = last is not None and T > 1 and stages is None
        for n in range(L):
            rows = last if prune and n == L - 1 else None
            x = attention_block(x, w.attn[n], c, n, cos, sin, pos, cache, self.ops, decode, static, rows)
            if stages is not None:
                stages[f"block.{n}.attn"] = x
            trace = {} if stages is not None else None
            x = moe_block(x, w.mlp[n], c, self.ops, trace, self.activations)
            if stages is not None:
                stages[f"block.{n}.mlp"] = x
                stages.update({f"block.{n}.mlp.{k}": v for k, v in trace.items()})
        if last is not None and not prune:
            x = x[torch.arange(B, device=x.device), last][:, None]  # (B, 1, C): only what is sampled
        if stages is not None:
            stages["norm"] = norm_for(self.ops)(x, w.tensors["norm.scale"])
        # the final RMSNorm and the unembedding: one kernel at decode where the backend fuses them (ops.linear)
        logits = project(self.ops, x, w.tensors["unembedding.weight"], norm_scale=w.tensors["norm.scale"]).float()
        if stages is not None:
            stages["logits"] = logits
        return logits[:, 0] if last is not None else logits
