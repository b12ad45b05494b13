"""The gpt-oss forward pass, wiring the pieces: embedding, blocks of (attention, MoE), final norm, unembedding.

Source: openai/gpt-oss gpt_oss/torch/model.py (Transformer, TransformerBlock). Ground truth of this kit.
Precision contract (see reference/README.md): every value is computed in float64 from the stored weights
(bf16 and MXFP4 widen exactly), with no other rounding; results are deterministic run to run.

Two entry points, both ground truth: `logits(tokens)` runs a whole sequence from an empty cache;
`forward(tokens, cache)` continues a sequence whose earlier keys and values are in `cache` (incremental
decoding). `forward(..., capture={})` fills the dict with every stage's output so that a port that
disagrees can be told the first stage where it diverges.

Not here: weight caching (weights are re-read per call, so memory stays bounded by one layer plus the
experts in use), batching, sampling, dtypes other than float64.

Legend: T tokens, S cached positions, C hidden, V vocabulary, K kv heads, D head_dim.
"""
import numpy as np

from reference.attention import attention_block
from reference.checkpoint import Checkpoint
from reference.moe import moe_block
from reference.norm import rms_norm
from reference.rope import cos_sin, inv_freq_and_concentration
from reference.tokens import check_tokens

UNEMBED_CHUNK = 16384  # vocabulary rows widened to float64 at a time (bounded memory for V = 201088)


class LayerCache:
    """Keys (after RoPE) and values of one layer for every position seen so far."""

    def __init__(self, K: int, D: int):
        self.k = np.zeros((0, K, D))
        self.v = np.zeros((0, K, D))
        self.positions = np.zeros((0,), dtype=np.int64)

    def append(self, k, v, positions):
        self.k = np.concatenate([self.k, k])
        self.v = np.concatenate([self.v, v])
        self.positions = np.concatenate([self.positions, positions])


class Cache:
    def __init__(self, config):
        self.layers = [LayerCache(config.num_key_value_heads, config.head_dim)
                       for _ in range(config.num_hidden_layers)]
        self.length = 0  # the position of the next token


class Model:
    def __init__(self, checkpoint):
        self.ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
        c = self.config = self.ckpt.config
        self.inv_freq, self.concentration = inv_freq_and_concentration(
            c.head_dim, c.rope_theta, c.rope_scaling_factor, c.initial_context_length,
            c.rope_ntk_alpha, c.rope_ntk_beta)

    def new_cache(self) -> Cache:
        return Cache(self.config)

    def logits(self, tokens) -> np.ndarray:
        """Causal logits (T, V) of a whole sequence, from an empty cache."""
        return self.forward(tokens, self.new_cache())

    def forward(self, tokens, cache: Cache, capture: dict | None = None) -> np.ndarray:
        c = self.config
        tokens = check_tokens(tokens, c.vocab_size)
        T = tokens.shape[0]
        positions = np.arange(cache.length, cache.length + T)
        cos, sin = cos_sin(positions, self.inv_freq, self.concentration)  # (T, D/2) each
        x = self.ckpt.rows("embedding.weight", tokens)  # (T, C)
        stages = capture if capture is not None else {}
        stages["embedding"] = x
        for n in range(c.num_hidden_layers):
            w = self.ckpt.layer_weights(n, "attn", ["norm.scale", "qkv.weight", "qkv.bias", "sinks",
                                                    "out.weight", "out.bias"])
            x = attention_block(x, w, c.num_attention_heads, c.num_key_value_heads, c.head_dim, cos, sin,
                                positions, cache.layers[n], c.window_of_layer(n))
            stages[f"block.{n}.attn"] = x
            w = self.ckpt.layer_weights(n, "mlp", ["norm.scale", "gate.weight", "gate.bias"])
            route = {}
            x = moe_block(x, w, lambda e, n=n: self.ckpt.expert(n, e), c.experts_per_token, c.swiglu_limit, route)
            stages[f"block.{n}.mlp"] = x
            for key, value in route.items():
                stages[f"block.{n}.mlp.{key}"] = value
        x = rms_norm(x, self.ckpt.get("norm.scale"))
        stages["norm"] = x
        logits = np.empty((T, c.vocab_size))
        for v0 in range(0, c.vocab_size, UNEMBED_CHUNK):
            v1 = min(v0 + UNEMBED_CHUNK, c.vocab_size)
            logits[:, v0:v1] = x @ self.ckpt.rows("unembedding.weight", slice(v0, v1)).T
        stages["logits"] = logits
        cache.length += T
        return logits


def stage_names(config) -> list[str]:
    """The captured residual-stream stages in forward order (routing details are captured beside them)."""
    blocks = [f"block.{n}.{part}" for n in range(config.num_hidden_layers) for part in ("attn", "mlp")]
    return ["embedding", *blocks, "norm", "logits"]
