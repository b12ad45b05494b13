"""The plain same-dtype port that sets the kit's tolerances: gpt-oss in PyTorch, run in float32 or bfloat16.

What this is: the yardstick of conformance/SPEC.md. A port's error against the reference is allowed to be a
small multiple of THIS port's error on the same data, so "how wrong may a bf16 port be" is answered by
measuring an honest bf16 port rather than by a guessed number. It follows openai/gpt-oss
gpt_oss/torch/model.py's precision choices: activations and weights in the run dtype, RMSNorm in float32,
the RoPE table in float32 (cast to the run dtype), softmaxes in the run dtype.
What this is not: fast, or a second ground truth (the reference is). Weights come from the reference's
checkpoint reader (exact float64) and are cast once.

Legend: T tokens, S keys, C hidden, H q-heads, K kv-heads, G = H // K, D head_dim, E experts, A per token.
"""
import math

import numpy as np
import torch

from golden.activations import round_activations, split_class
from reference.checkpoint import Checkpoint
from reference.moe import SWIGLU_ALPHA
from reference.norm import EPS
from reference.rope import inv_freq_and_concentration

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def t64(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    t = x.float()
    t = t * torch.rsqrt(torch.mean(t * t, dim=-1, keepdim=True) + eps)
    return (t * scale.float()).to(x.dtype)


def cos_sin(positions, head_dim, theta, factor, icl, alpha, beta, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq, conc = inv_freq_and_concentration(head_dim, theta, factor, icl, alpha, beta)
    angles = torch.as_tensor(np.asarray(positions), dtype=torch.float32)[:, None] * t64(inv_freq).float()[None]
    return (torch.cos(angles) * conc).to(dtype), (torch.sin(angles) * conc).to(dtype)  # float32 table


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    T, *_, D = x.shape
    extra = (1,) * (x.ndim - 2)
    c, s = cos.reshape(T, *extra, D // 2), sin.reshape(T, *extra, D // 2)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def sdpa(q, k, v, sinks, sm_scale: float, window: int, q_pos, k_pos) -> torch.Tensor:
    """q (T, H, D), k/v (S, K, D), sinks (H,) -> (T, H, D), all in q's dtype."""
    T, H, D = q.shape
    S, K, _ = k.shape
    G = H // K
    qg = q.reshape(T, K, G, D)
    scores = torch.einsum("tkgd,skd->kgts", qg, k) * sm_scale  # (K, G, T, S)
    qp, kp = torch.as_tensor(q_pos)[:, None], torch.as_tensor(k_pos)[None, :]
    visible = kp <= qp
    if window:
        visible &= qp - kp < window
    scores = scores.masked_fill(~visible, -math.inf)
    sink = sinks.reshape(K, G, 1, 1).expand(K, G, T, 1).to(scores.dtype)
    p = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :S]
    return torch.einsum("kgts,skd->tkgd", p, v).reshape(T, H, D)


def route(logits: torch.Tensor, A: int) -> tuple[torch.Tensor, torch.Tensor]:
    top = torch.topk(logits, A, dim=-1, sorted=True)
    return top.indices, torch.softmax(top.values, dim=-1)


def swiglu(h: torch.Tensor, limit: float) -> torch.Tensor:
    gate, linear = h[..., 0::2].clamp(max=limit), h[..., 1::2].clamp(-limit, limit)
    return gate * torch.sigmoid(SWIGLU_ALPHA * gate) * (linear + 1)


class BaselineModel:
    """gpt-oss forward in one torch dtype; `forward(tokens, capture)` fills the reference's stage names."""

    def __init__(self, path, precision: str, cache: bool = True):
        """precision: a dtype ("bfloat16") or a precision class ("bfloat16+int8", golden/activations.py)."""
        self.ckpt = Checkpoint(path)
        self.c = self.ckpt.config
        dtype, self.activations = split_class(precision)  # activations: None, or golden/activations.py's rule
        self.dt = DTYPES[dtype]
        self.cache = cache  # False for real checkpoints: weights are re-read per use, memory stays bounded
        self._w: dict = {}

    def w(self, name: str) -> torch.Tensor:
        if name in self._w:
            return self._w[name]
        value = t64(self.ckpt.get(name)).to(self.dt)
        if self.cache:
            self._w[name] = value
        return value

    def expert(self, n: int, e: int):
        key = f"block.{n}.mlp.expert{e}"
        if key in self._w:
            return self._w[key]
        W1, b1, W2, b2 = self.ckpt.expert(n, e)  # exact float64; every MXFP4 value is exact in bf16
        value = tuple(t64(a).to(self.dt) for a in (W1, b1, W2, b2))
        if self.cache:
            self._w[key] = value
        return value

    def expert_matmul(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        if self.activations is None:
            return x @ W.T
        # a rounding kernel multiplies its rounded activations by the exact weights (int8 x MXFP4 in llama.cpp,
        # FP8 x FP4 on tensor cores), accumulating in float32: only the output is in the run dtype
        return (round_activations(x, self.activations) @ W.float().T).to(x.dtype)

    def forward(self, tokens, capture: dict | None = None) -> torch.Tensor:
        c, dt = self.c, self.dt
        st = capture if capture is not None else {}
        T = len(tokens)
        H, K, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        pos = np.arange(T)
        cos, sin = cos_sin(pos, D, c.rope_theta, c.rope_scaling_factor, c.initial_context_length,
                           c.rope_ntk_alpha, c.rope_ntk_beta, dt)
        x = self.w("embedding.weight")[torch.as_tensor(np.asarray(tokens, dtype=np.int64))]
        st["embedding"] = x
        for n in range(c.num_hidden_layers):
            a = f"block.{n}.attn."
            t = rms_norm(x, self.w(a + "norm.scale"))
            qkv = t @ self.w(a + "qkv.weight").T + self.w(a + "qkv.bias")
            q = qkv[:, : H * D].reshape(T, H, D)
            k = qkv[:, H * D: (H + K) * D].reshape(T, K, D)
            v = qkv[:, (H + K) * D:].reshape(T, K, D)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            o = sdpa(q, k, v, self.w(a + "sinks"), 1 / math.sqrt(D), c.window_of_layer(n) or 0, pos, pos)
            x = x + o.reshape(T, H * D) @ self.w(a + "out.weight").T + self.w(a + "out.bias")
            st[f"block.{n}.attn"] = x
            m = f"block.{n}.mlp."
            t = rms_norm(x, self.w(m + "norm.scale"))
            logits = t @ self.w(m + "gate.weight").T + self.w(m + "gate.bias")
            ids, weights = route(logits, c.experts_per_token)
            st[f"block.{n}.mlp.router_logits"] = logits
            out = torch.zeros_like(x)
            for e in torch.unique(ids).tolist():
                rows, slot = torch.nonzero(ids == e, as_tuple=True)
                W1, b1, W2, b2 = self.expert(n, e)
                y = swiglu(self.expert_matmul(t[rows], W1) + b1, c.swiglu_limit)
                y = self.expert_matmul(y, W2) + b2
                out[rows] += weights[rows, slot][:, None] * y
            x = x + out
            st[f"block.{n}.mlp"] = x
        x = rms_norm(x, self.w("norm.scale"))
        st["norm"] = x
        logits = x @ self.w("unembedding.weight").T
        st["logits"] = logits
        return logits
