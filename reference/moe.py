"""gpt-oss mixture of experts: router, top-k, and SwiGLU experts with a clamp and a +1.

Source: openai/gpt-oss gpt_oss/torch/model.py (MLPBlock, swiglu); model card (arXiv:2508.10925).
Quirks, each where it happens below:
  - the router is a linear layer WITH bias; softmax is over the k selected logits only, not all experts.
  - top-k ties (equal logits) go to the lower expert index (torch.topk leaves ties unspecified).
  - mlp1's output columns interleave gate and linear: column 2i is gate i, column 2i+1 is linear i.
  - SwiGLU: gate clamped above only (<= limit), linear clamped both ways ([-limit, limit]),
    gate * sigmoid(1.702 * gate) * (linear + 1): note the +1.
  - expert biases are added per expert, before the routing weights are applied.
Experts are decoded lazily: only those some token routes to are read and decoded, one at a time.

Legend: T tokens, C hidden, E experts, A experts per token, I intermediate.
"""
import numpy as np

from reference.norm import rms_norm

SWIGLU_ALPHA = 1.702  # not in config.json: a constant of the model


def route(logits: np.ndarray, A: int) -> tuple[np.ndarray, np.ndarray]:
    """logits (T, E) -> expert ids (T, A) in descending logit order, and their weights (T, A) summing to 1."""
    T, E = logits.shape
    assert 1 <= A <= E
    order = np.lexsort((np.broadcast_to(np.arange(E), (T, E)), -logits), axis=-1)  # by -logit, then by id
    ids = order[:, :A]
    top = np.take_along_axis(logits, ids, axis=-1)  # (T, A)
    w = np.exp(top - top[:, :1])  # softmax over the A chosen only
    return ids, w / w.sum(axis=-1, keepdims=True)


def swiglu(h: np.ndarray, limit: float, alpha: float = SWIGLU_ALPHA) -> np.ndarray:
    """h (..., 2I) -> (..., I)."""
    gate, linear = h[..., 0::2], h[..., 1::2]  # quirk: interleaved columns
    gate = np.minimum(gate, limit)  # quirk: clamped above only
    linear = np.clip(linear, -limit, limit)
    return gate / (1.0 + np.exp(-alpha * gate)) * (linear + 1.0)  # quirk: +1 on the linear half


def moe_block(x, w, expert, A: int, limit: float, trace=None):
    """x (T, C) -> x + MoE(x). w: {"norm.scale", "gate.weight" (E, C), "gate.bias" (E,)};
    expert(e) -> (W1 (2I, C), b1 (2I,), W2 (C, I), b2 (C,)) decoded on demand."""
    T, C = x.shape
    E = w["gate.bias"].shape[0]
    assert w["gate.weight"].shape == (E, C)
    t = rms_norm(x, w["norm.scale"])
    logits = t @ w["gate.weight"].T + w["gate.bias"]  # (T, E)
    ids, weights = route(logits, A)
    if trace is not None:
        trace.update(router_logits=logits, expert_ids=ids, expert_weights=weights)
    out = np.zeros_like(x)
    for e in np.unique(ids):
        rows, slot = np.nonzero(ids == e)  # tokens routed to expert e, and where in their top-k
        W1, b1, W2, b2 = expert(int(e))
        I = W2.shape[1]
        assert W1.shape == (2 * I, C) and b1.shape == (2 * I,) and W2.shape == (C, I) and b2.shape == (C,)
        h = swiglu(t[rows] @ W1.T + b1, limit)  # (n, I)
        y = h @ W2.T + b2  # (n, C)
        out[rows] += weights[rows, slot][:, None] * y
    return x + out
