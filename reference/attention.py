"""gpt-oss attention: grouped-query attention with a learned sink logit per head and a sliding window.

Source: openai/gpt-oss gpt_oss/torch/model.py (sdpa, AttentionBlock); model card (arXiv:2508.10925).
Quirks, each where it happens below:
  - qkv is ONE linear layer (with bias); its output columns are [q heads | k heads | v heads].
  - query head h uses key/value head h // G (heads are grouped contiguously, not interleaved).
  - the sink is one extra logit per query head, joined to the softmax and dropped after it: it takes
    probability mass but contributes no value. It is NOT scaled by 1/sqrt(D) (it is added after scaling).
  - sliding window on even layers only: query at position p sees keys at positions p-W+1 .. p (W keys).
Not here: the KV cache policy (model.py keeps every key; ring buffers are a port's choice). Queries are taken in
chunks only to bound memory (query_chunk); each query's row is computed alone, so no number depends on it.

Legend: T query tokens, S key positions, C hidden, H query heads, K kv heads, G = H // K, D head_dim.
"""
import math

import numpy as np

from reference.norm import rms_norm
from reference.rope import apply_rope


SCORES_AT_ONCE = 2**22  # float64 scores held at once (32 MiB): queries are taken in chunks that fit it


def query_chunk(K: int, G: int, S: int) -> int:
    """Queries per chunk: the (K, G, chunk, S) scores of a chunk stay within SCORES_AT_ONCE, so attention's memory
    grows linearly with the keys instead of as T x S (a 20,000-token prompt of gpt-oss-20b: chunks of 3 queries
    and a few 32 MiB arrays at a time, where one block would hold 190 GiB of scores)."""
    return max(1, SCORES_AT_ONCE // (K * G * S))


def sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, sinks: np.ndarray,
         q_pos: np.ndarray, k_pos: np.ndarray, window: int | None, chunk: int | None = None) -> np.ndarray:
    """Attention of T queries over S keys, `chunk` queries at a time (default: query_chunk). Each query's row is
    computed alone, so the chunking cannot change a bit of the result (tested against one block)."""
    T, K, G, D = q.shape
    S = k.shape[0]
    assert k.shape == v.shape == (S, K, D) and sinks.shape == (K, G), (k.shape, v.shape, sinks.shape)
    assert q_pos.shape == (T,) and k_pos.shape == (S,)
    chunk = chunk or query_chunk(K, G, S)
    return np.concatenate([sdpa_chunk(q[t:t + chunk], k, v, sinks, q_pos[t:t + chunk], k_pos, window)
                           for t in range(0, T, chunk)])  # (T, K, G, D)


def sdpa_chunk(q, k, v, sinks, q_pos, k_pos, window) -> np.ndarray:
    """sdpa for a chunk of T queries (shapes as sdpa's, checked there)."""
    T, K, G, D = q.shape
    S = k.shape[0]
    scores = np.einsum("tkgd,skd->kgts", q, k) / math.sqrt(D)  # (K, G, T, S)
    visible = k_pos[None, :] <= q_pos[:, None]  # causal, (T, S)
    if window is not None:
        # quirk: sliding window (even layers): the last W positions, the query's own included
        visible &= q_pos[:, None] - k_pos[None, :] < window
    scores = np.where(visible, scores, -np.inf)
    sink = np.broadcast_to(sinks[:, :, None, None], (K, G, T, 1))
    # quirk: the sink is one extra logit per head, not scaled by 1/sqrt(D), joined to the softmax ...
    logits = np.concatenate([scores, sink], axis=-1)  # (K, G, T, S+1): one extra column for the sink
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = p / p.sum(axis=-1, keepdims=True)
    p = p[..., :S]  # ... and dropped after it: it takes mass, gives no value (rows sum to less than 1)
    return np.einsum("kgts,skd->tkgd", p, v)  # (T, K, G, D)


def split_qkv(qkv: np.ndarray, H: int, K: int, D: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T, QKV = qkv.shape
    assert QKV == D * (H + 2 * K), (qkv.shape, H, K, D)
    q = qkv[:, : H * D].reshape(T, K, H // K, D)  # head h = k*G + g
    k = qkv[:, H * D: (H + K) * D].reshape(T, K, D)
    v = qkv[:, (H + K) * D:].reshape(T, K, D)
    return q, k, v


def attention_block(x, w, H: int, K: int, D: int, cos, sin, positions, cache, window):
    """x (T, C) residual stream -> x + attention(x). w: dict of this layer's attention weights (float64).
    cache: a LayerCache holding earlier keys/values (rotated), extended in place by this call."""
    T, C = x.shape
    assert w["qkv.weight"].shape == (D * (H + 2 * K), C) and w["out.weight"].shape == (C, H * D)
    t = rms_norm(x, w["norm.scale"])
    qkv = t @ w["qkv.weight"].T + w["qkv.bias"]  # (T, D*(H+2K))
    q, k, v = split_qkv(qkv, H, K, D)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    cache.append(k, v, positions)
    o = sdpa(q, cache.k, cache.v, w["sinks"].reshape(K, H // K), positions, cache.positions, window)
    return x + o.reshape(T, H * D) @ w["out.weight"].T + w["out.bias"]
