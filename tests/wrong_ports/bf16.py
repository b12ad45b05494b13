"""Wrong ports as real ports are: bfloat16, logits only. Each is golden/baseline.py's plain bf16 port (the yardstick
of the kit's bf16 bounds) with ONE bug planted, written here in torch independently of conformance/traps.py and
conformance/diagnose.py, so the kit's model-level diagnosis is tested, not assumed. The kit must fail each on its
bf16 bounds and name the bug from the logits alone.

Use one directly:  pytest conformance/ --impl tests/wrong_ports/bf16.py:swiglu_no_clamp --dtype bfloat16
The same port in a precision class that rounds activations at the expert matmuls (golden/activations.py):
`honest_int8` (llama.cpp's Q8_0), `honest_fp8` (MXFP8), and `int8_<bug>` for every bug.
"""
import contextlib
import math
from unittest import mock

import numpy as np
import torch

from golden import baseline as B
from reference import config as rconfig, mxfp4

_sdpa, _rms, _rope_table, _apply_rope = B.sdpa, B.rms_norm, B.inv_freq_and_concentration, B.apply_rope
_decode = mxfp4.decode


class Bf16Port:
    """golden/baseline.py's BaselineModel in bfloat16, `patches` [(object, attribute, value)] active in its forward;
    `weights` maps a tensor name to a function of the tensor (a missing bias, a tied matrix)."""

    dtype = "bfloat16"
    device = "cpu"

    def __init__(self, checkpoint_dir, bug: str, patches=(), weights=None, activations=None):
        self.name = f"wrong bf16 port: {bug}" + (f" ({activations} activations)" if activations else "")
        self.activations = activations  # the kit reads it: the bounds of the bfloat16+int8 class
        self._patches, self._weights = patches, weights or {}
        self._m = B.BaselineModel(checkpoint_dir, "bfloat16" + (f"+{activations}" if activations else ""))

    def logits(self, tokens):
        m = self._m
        w = m.w

        def weight(name):
            for suffix, fn in self._weights.items():
                if name.endswith(suffix):
                    return fn(name, w)
            return w(name)
        with contextlib.ExitStack() as stack:
            for obj, attr, value in self._patches:
                stack.enter_context(mock.patch.object(obj, attr, value))
            stack.enter_context(mock.patch.object(m, "w", weight))
            with torch.no_grad():
                return m.forward([int(t) for t in tokens]).float().numpy()


# -- the bugs -----------------------------------------------------------------------------------------------------
def rope_table(rounded=False, concentration=True, factor=None, **fixed):
    def table(D, theta, f, icl, alpha, beta):
        theta, icl, beta = fixed.get("theta", theta), fixed.get("icl", icl), fixed.get("beta", beta)
        alpha = fixed.get("alpha", alpha)
        f = f if factor is None else factor
        freq = theta ** (np.arange(0, D, 2) / D)
        if f <= 1:
            return 1 / freq, 1.0
        lo = D / 2 * math.log(icl / (beta * 2 * math.pi)) / math.log(theta)
        hi = D / 2 * math.log(icl / (alpha * 2 * math.pi)) / math.log(theta)
        if rounded:  # HF's generic YaRN (truncate=True), llama.cpp's ggml_rope_yarn_corr_dims, mlx-lm
            lo, hi = math.floor(lo), math.ceil(hi)
        keep = 1 - np.clip((np.arange(D // 2) - lo) / (hi - lo), 0, 1)
        return 1 / (f * freq) * (1 - keep) + 1 / freq * keep, (0.1 * math.log(f) + 1 if concentration else 1.0)
    return [(B, "inv_freq_and_concentration", table)]


def sdpa(mode="", scale=None):
    def attend(q, k, v, sinks, sm_scale, window, q_pos, k_pos):
        T, H, D = q.shape
        S, K, _ = k.shape
        if mode == "interleaved":  # query head h reads kv head h % K
            idx = torch.arange(H) % K
            s = torch.einsum("thd,shd->hts", q, k[:, idx]) * (scale(D) if scale else sm_scale)
        else:
            s = torch.einsum("thd,shd->hts", q, k.repeat_interleave(H // K, 1)) * (scale(D) if scale else sm_scale)
        qp, kp = torch.as_tensor(q_pos)[:, None], torch.as_tensor(k_pos)[None, :]
        W = {"window+1": window + 1 if window else 0, "window-1": window - 1 if window else 0,
             "no_window": 0}.get(mode, window)
        vis = (kp <= qp) & ((qp - kp < W) if W else True)
        s = s.masked_fill(~vis, -math.inf)
        if mode == "no_sink":
            p = torch.softmax(s, -1)
        else:
            sk = sinks * (sm_scale if mode == "sink_scaled" else 1.0)
            p = torch.softmax(torch.cat([s, sk.to(s.dtype)[:, None, None].expand(H, T, 1)], -1), -1)[..., :S]
        vv = v[:, torch.arange(H) % K] if mode == "interleaved" else v.repeat_interleave(H // K, 1)
        return torch.einsum("hts,shd->thd", p, vv)
    return [(B, "sdpa", attend)]


def swiglu(plus_one=1.0, clamp=True, both=False, split=False, alpha=1.702, limit=None):
    def act(h, L):
        L = L if limit is None else limit
        I = h.shape[-1] // 2
        g, x = (h[..., :I], h[..., I:]) if split else (h[..., 0::2], h[..., 1::2])
        if clamp:
            g = g.clamp(-L, L) if both else g.clamp(max=L)
            x = x.clamp(-L, L)
        return g * torch.sigmoid(alpha * g) * (x + plus_one)
    return [(B, "swiglu", act)]


def route_softmax_all(logits, A):
    p = torch.softmax(logits, -1)
    top = torch.topk(logits, A, -1)
    return top.indices, torch.gather(p, -1, top.indices)


def rms(eps=1e-5, outside=False, center=False):
    def norm(x, scale, _eps=1e-5):
        t = x.float()
        if center:
            t = t - t.mean(-1, keepdim=True)
        ms = torch.mean(t * t, -1, keepdim=True)
        t = t / (torch.sqrt(ms) + eps) if outside else t * torch.rsqrt(ms + eps)
        return (t * scale.float()).to(x.dtype)
    return [(B, "rms_norm", norm)]


def decode(high_first=False, shift=0):
    def dec(blocks, scales):
        if high_first:
            blocks = ((blocks & 0x0F) << 4 | (blocks >> 4)).astype(np.uint8)
        return _decode(blocks, scales) * 2.0 ** shift
    return [(mxfp4, "decode", dec)]


def rope_pairs(x, cos, sin):
    T, *_, D = x.shape
    c, s = (a.reshape(T, *(1,) * (x.ndim - 2), D // 2) for a in (cos, sin))
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x[..., 0::2] * c - x[..., 1::2] * s, x[..., 1::2] * c + x[..., 0::2] * s
    return out


def rope_q_only():
    calls = [0]

    def rope(x, cos, sin):  # BaselineModel rotates q, then k, in every layer
        calls[0] += 1
        return _apply_rope(x, cos, sin) if calls[0] % 2 == 1 else x
    return [(B, "apply_rope", rope)]


def final_norm_missing():
    def norm(x, scale, eps=1e-5):
        return x if scale.shape == (x.shape[-1],) and getattr(scale, "_final", False) else _rms(x, scale, eps)
    return [(B, "rms_norm", norm)]


def _zero(name, w):
    return torch.zeros_like(w(name))


def _final_marked(name, w):
    t = w(name)
    t._final = True  # the final norm's scale, recognised by final_norm_missing's rms_norm
    return t


def window(fn):
    return [(rconfig.Config, "window_of_layer", fn)]


R = rconfig.GPT_OSS_20B
# name -> (bug, patches, weight edits); the trap diagnose.py must name, if not the same string
BUGS = {
    "yarn_rounded": ("YaRN ramp bounds floored/ceiled", rope_table(rounded=True), None),
    "yarn_no_concentration": ("no YaRN concentration", rope_table(concentration=False), None),
    "rope_plain": ("no YaRN at all", rope_table(factor=1.0), None),
    "yarn_context_fixed": ("YaRN context 4096 hard-coded", rope_table(icl=R.initial_context_length), None),
    "yarn_beta_fixed": ("YaRN beta 32 hard-coded", rope_table(beta=R.rope_ntk_beta), None),
    "yarn_alpha_fixed": ("YaRN alpha 1 hard-coded", rope_table(alpha=R.rope_ntk_alpha), None),
    "yarn_factor_fixed": ("YaRN factor 32 hard-coded", rope_table(factor=R.rope_scaling_factor), None),
    "rope_theta_fixed": ("theta 150000 hard-coded", rope_table(theta=R.rope_theta), None),
    "rope_interleaved_pairs": ("RoPE on (2i, 2i+1) pairs", [(B, "apply_rope", rope_pairs)], None),
    "rope_q_only": ("RoPE on q only", rope_q_only(), None),
    "sinks_ignored": ("no sinks", sdpa("no_sink"), None),
    "sinks_scaled": ("sink scaled by 1/sqrt(D)", sdpa("sink_scaled"), None),
    "window_plus_one": ("window W+1", sdpa("window+1"), None),
    "window_minus_one": ("window W-1", sdpa("window-1"), None),
    "window_none": ("no sliding window", sdpa("no_window"), None),
    "window_odd_layers": ("window on odd layers", window(lambda self, n: self.sliding_window if n % 2 else None), None),
    "window_every_layer": ("window on every layer", window(lambda self, n: self.sliding_window), None),
    "window_fixed": ("window 128 hard-coded", window(lambda self, n: R.sliding_window if n % 2 == 0 else None), None),
    "gqa_interleaved": ("GQA h % K", sdpa("interleaved"), None),
    "attention_scale_1_over_d": ("scores / D", sdpa(scale=lambda D: 1 / D), None),
    "qkv_bias_missing": ("no qkv bias", (), {"attn.qkv.bias": _zero}),
    "out_bias_missing": ("no out bias", (), {"attn.out.bias": _zero}),
    "route_softmax_all": ("softmax over all experts", [(B, "route", route_softmax_all)], None),
    "router_bias_missing": ("no router bias", (), {"mlp.gate.bias": _zero}),
    "swiglu_no_plus1": ("SwiGLU without +1", swiglu(plus_one=0.0), None),
    "swiglu_no_clamp": ("SwiGLU without clamp", swiglu(clamp=False), None),
    "swiglu_gate_clamped_both": ("gate clamped both sides", swiglu(both=True), None),
    "swiglu_split_halves": ("gate/linear halves", swiglu(split=True), None),
    "swiglu_alpha_1": ("plain SiLU", swiglu(alpha=1.0), None),
    "swiglu_limit_fixed": ("limit 7 hard-coded", swiglu(limit=R.swiglu_limit), None),
    "mxfp4_nibble_order": ("high nibble first", decode(high_first=True), None),
    "mxfp4_e8m0_bias_128": ("E8M0 bias 128", decode(shift=-1), None),
    "rms_eps_1e-6": ("eps 1e-6", rms(eps=1e-6), None),
    "rms_eps_outside_sqrt": ("eps outside the sqrt", rms(outside=True), None),
    "layernorm": ("LayerNorm", rms(center=True), None),
    # layer norms' scales end in ".norm.scale" (passed through), the final one is "norm.scale" (marked)
    "final_norm_missing": ("no final norm", final_norm_missing(),
                           {".norm.scale": lambda name, w: w(name), "norm.scale": _final_marked}),
    "unembedding_tied": ("tied unembedding", (), {"unembedding.weight": lambda name, w: w("embedding.weight")}),
}
# two at once, as llama.cpp and mlx-lm have them (YaRN bounds rounded, SwiGLU limit fixed at 7)
BUGS["yarn_rounded+swiglu_limit_fixed"] = ("llama.cpp's pair", rope_table(rounded=True) + swiglu(limit=R.swiglu_limit),
                                           None)


def _make(name, activations=None):
    bug, patches, weights = BUGS[name]
    return lambda checkpoint_dir: Bf16Port(checkpoint_dir, bug, patches, weights, activations)


globals().update({name: _make(name) for name in BUGS if "+" not in name})
globals().update({f"int8_{name}": _make(name, "int8") for name in BUGS if "+" not in name})
llama_cpp_pair = _make("yarn_rounded+swiglu_limit_fixed")


def honest(checkpoint_dir):
    return Bf16Port(checkpoint_dir, "none (the plain bf16 port itself)")


def honest_int8(checkpoint_dir):
    return Bf16Port(checkpoint_dir, "none", activations="int8")


def honest_fp8(checkpoint_dir):
    return Bf16Port(checkpoint_dir, "none", activations="fp8")
