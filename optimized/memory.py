"""Planned device memory of the engine for a config, a context and a batch, in bytes, before loading anything.

  weights:   exactly what checkpoint.load places from a release-format (bf16) checkpoint: packed MXFP4 experts
             (uint8 blocks + scales), norm scales and sinks in float32, every other tensor in the compute dtype
             (float32 on CPU keeps the big matrices bf16: checkpoint.placed_dtype); tested against loaded tensors;
  kv_cache:  exactly what cache.Cache allocates: keys and values in the compute dtype plus an int64 position per
             slot; full layers keep `context` slots, sliding-window layers min(window, context) (tested);
  workspace: an upper estimate of the transient tensors of the torch ops, the larger of a prefill chunk
             (activations, one decoded expert, a query chunk's float32 scores) and a decode step (the routed
             experts decoded by the gather path, scores over the whole cache, the logits), plus the RoPE
             tables of every position of the cache (model.py's rope_table). An estimate,
             written out below term by term; allocator fragmentation and CUDA context are not in it.

Not here: measuring anything (tests compare the first two with real tensors; the GPU script measures peaks).
"""
import torch

from optimized.attention import SCORE_BYTES
from optimized.cache import layer_slots
from optimized.checkpoint import placed_dtype
from optimized.moe import GATHER_BYTES
from reference.checkpoint import expected_tensors

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, torch.bfloat16: torch.bfloat16, torch.float32: torch.float32}


def _size(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def plan_memory(config, context: int, batch: int, dtype="bf16", prefill_chunk: int = 1024,
                device="cuda", experts: str = "mxfp4") -> dict[str, int]:
    """experts: "mxfp4" (packed, as released) or "dense" (a dequantized / bf16 fine-tuned checkpoint); the
    "experts_packed" entry is the experts' bytes in either case."""
    dt = DTYPES[dtype]
    el = _size(dt)
    c = config
    C, I, E, A, V = c.hidden_size, c.intermediate_size, c.num_experts, c.experts_per_token, c.vocab_size
    H, K, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    expert_sum = weights = 0
    for name, (shape, kind) in expected_tensors(c, experts).items():
        n = 1
        for s in shape:
            n *= s
        size = n * _size(placed_dtype(name, kind, dt, device))
        weights += size
        expert_sum += size if kind == "u8" or name.endswith(("mlp1_weight", "mlp2_weight")) else 0
    slots = sum(layer_slots(c, n, context) for n in range(c.num_hidden_layers))
    kv = slots * batch * (2 * K * D * el + 8)
    S_full = context
    # decode step: routed experts decoded at once (gather path, bounded by GATHER_BYTES), scores, logits
    R = batch * A
    gather = min(R * 3 * I * C * el, GATHER_BYTES) + R * (3 * I + 2 * C) * 4
    decode = gather + 3 * batch * H * S_full * 4 + batch * V * 4 + batch * (4 * C + c.qkv_dim) * 4
    # prefill chunk: N tokens; activations (residual, norm, qkv, q/k roped in float32, attention out), one expert
    # decoded, its hidden rows for every routed token (worst case: all N*A rows on one expert), scores
    N = batch * min(prefill_chunk, context)
    acts = N * (3 * C + 2 * c.qkv_dim + H * D) * 4 + N * A * (2 * I + I + C) * 4
    kv_cat = 2 * batch * (c.sliding_window + min(prefill_chunk, context)) * K * D * 4  # ring layers: [cache | new]
    prefill = acts + 3 * I * C * el + 3 * SCORE_BYTES + kv_cat + batch * V * 4
    rope = 2 * context * (D // 2) * 4  # the model's cos and sin tables for every position of the cache (float32)
    out = {"weights": weights, "experts_packed": expert_sum, "kv_cache": kv, "workspace": max(decode, prefill) + rope}
    out["total"] = out["weights"] + out["kv_cache"] + out["workspace"]
    return out


def report(config, context: int, batch: int, dtype="bf16", device="cuda") -> str:
    p = plan_memory(config, context, batch, dtype, device=device)
    return ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in p.items())
