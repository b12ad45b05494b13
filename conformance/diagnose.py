"""Model-level trap diagnosis: which known deviation from gpt-oss does a port's LOGITS match?

Most ports expose logits and nothing else (llama.cpp, vLLM, MLX, a served endpoint), so the op checks and the
stage search of test_model.py cannot say what is wrong. Here the float64 reference is re-run with each known
trap of SPEC.md section 4 planted in it (the op-level variants of conformance/traps.py, applied inside the
reference's own calls), and a failing port's logits are compared with every such variant.

Rule (SPEC.md "Model-level diagnosis"): a variant EXPLAINS the port when the port's error against it is within
the check's bound AND at least RATIO times below its error against the reference. Real ports carry several
traps at once (llama.cpp: YaRN bounds rounded and the SwiGLU limit fixed at 7), so the search is greedy: the
best single variant, then the best trap added to it, up to MAX_TRAPS, each step required to cut the error by
STEP (where no single trap does, the best pair of the PAIR_FROM best singles, once); the combination is named only when it meets the rule above. A trap is named with whether it changes
gpt-oss-20b/120b as released, or only checkpoints whose config differs from the release's (a port that ignores
a key the release keeps at its default).

Variant logits are float64 on the golden (tiny) checkpoints: computed on demand, cached per process.
"""
import contextlib
import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np

from conformance import spec, traps
from reference import attention, config as rconfig, model as rmodel, moe, mxfp4
from reference.model import Model
from reference.rope import apply_rope

RATIO = 4.0  # a named variant is at least this many times closer to the port than the reference is
MAX_TRAPS = 4  # the greedy search stops after this many traps in one combination
STEP = 1.25  # ... or when the best trap added cuts the error by less than this factor (after trying pairs)
PAIR_FROM = 6  # where no single trap added cuts it, pairs of the best this many singles are tried
RELEASE = rconfig.GPT_OSS_20B  # the released config values (20b and 120b agree on all but depth and experts)


@dataclass(frozen=True)
class Trap:
    name: str  # short id, as in the certificate
    what: str  # one sentence: the deviation and the right answer
    released: bool  # True: changes gpt-oss-20b/120b as released; False: only other config values
    patches: Callable[[Model], list]  # model -> [(object, attribute, replacement)] active during its forward


# -- the variants, as patches of the reference's own calls ------------------------------------------------------
def norm_everywhere(fn):
    """Patches putting `fn` in place of rms_norm wherever the reference normalizes (attention, MoE, final)."""
    return lambda m: [(attention, "rms_norm", fn), (moe, "rms_norm", fn), (rmodel, "rms_norm", fn)]


def _rms(**kw):
    return norm_everywhere(lambda x, scale, eps=1e-5: traps.rms_variant(x, scale, eps, **kw))


def _rms_eps(eps):
    return norm_everywhere(lambda x, scale, _eps=1e-5: traps.rms_variant(x, scale, eps))  # the argument is ignored


def _swiglu(**kw):
    return lambda m: [(moe, "swiglu", lambda h, limit, alpha=moe.SWIGLU_ALPHA: traps.swiglu_variant(h, limit, **kw))]


def _swiglu_limit(value):
    return lambda m: [(moe, "swiglu", lambda h, limit, alpha=moe.SWIGLU_ALPHA: traps.swiglu_variant(h, value))]


def _route(fn):
    return lambda m: [(moe, "route", fn)]


def _decode(**kw):
    return lambda m: [(mxfp4, "decode", lambda blocks, scales: traps.decode_variant(blocks, scales, **kw))]


def _attn(mode="", sm=None):
    def sdpa(q, k, v, sinks, q_pos, k_pos, window):
        T, K, G, D = q.shape
        out = traps.attention_variant(q.reshape(T, K * G, D), k, v, sinks.reshape(K * G),
                                      sm(D) if sm else 1 / math.sqrt(D), window or 0, q_pos, k_pos, mode)
        return out.reshape(T, K, G, D)
    return lambda m: [(attention, "sdpa", sdpa)]


def _rope(**over):
    """The RoPE table of a variant (traps.rope_variant), from the config with `over` replacing its values. RoPE
    traps compose by merging their `over` (patched_stages): two patches of the one table would keep only the last."""
    def patches(m):
        c = dataclasses.asdict(m.config) | {k: v for k, v in over.items() if not isinstance(v, bool)}
        flags = {k: v for k, v in over.items() if isinstance(v, bool)}
        params = (c["head_dim"], c["rope_theta"], c["rope_scaling_factor"], c["initial_context_length"],
                  c["rope_ntk_alpha"], c["rope_ntk_beta"])
        return [(rmodel, "cos_sin", lambda pos, inv, conc: traps.rope_variant(pos, *params, **flags))]
    patches.rope_over = over
    return patches


def _rotate_pairs(x, cos, sin):  # GPT-J's interleaved pairs (2i, 2i+1) instead of halves (i, i + D/2)
    T, *_, D = x.shape
    c, s = (a.reshape(T, *(1,) * (x.ndim - 2), D // 2) for a in (cos, sin))
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x[..., 0::2] * c - x[..., 1::2] * s, x[..., 1::2] * c + x[..., 0::2] * s
    return out


def _rope_q_only(x, cos, sin):
    return apply_rope(x, cos, sin) if x.ndim == 4 else x  # q is (T, K, G, D), k (T, K, D)


def _window(fn):
    return lambda m: [(rconfig.Config, "window_of_layer", fn)]


def _config(**over):
    def patches(m):
        return [(m, "config", dataclasses.replace(m.config, **over))]
    return patches


def _weights(drop):
    """Weights read as zero: `drop` names a tensor suffix ('attn.qkv.bias', 'mlp.gate.bias', 'expert biases')."""
    def patches(m):
        read, expert = m.ckpt.layer_weights, m.ckpt.expert

        def layer_weights(layer, part, names):
            w = read(layer, part, names)
            return {n: (np.zeros_like(a) if f"{part}.{n}" == drop else a) for n, a in w.items()}

        def expert_zero_bias(layer, e):
            W1, b1, W2, b2 = expert(layer, e)
            return W1, np.zeros_like(b1), W2, np.zeros_like(b2)
        if drop == "expert biases":
            return [(m.ckpt, "expert", expert_zero_bias)]
        return [(m.ckpt, "layer_weights", layer_weights)]
    return patches


def _tied_unembedding(m):
    rows = m.ckpt.rows
    return [(m.ckpt, "rows", lambda name, index: rows("embedding.weight" if name == "unembedding.weight" else name,
                                                      index))]


R = RELEASE
TRAPS = [
    # RoPE / YaRN
    Trap("yarn_rounded", "YaRN ramp bounds rounded to integers (floor/ceil; gpt-oss keeps them unrounded)", True,
         _rope(rounded=True)),
    Trap("yarn_no_concentration", "YaRN concentration 0.1*ln(factor)+1 not applied to cos and sin", True,
         _rope(concentration=False)),
    Trap("rope_plain", "plain RoPE without YaRN scaling", True, _rope(yarn=False)),
    Trap("yarn_alpha_beta_swapped", "YaRN ntk_alpha/ntk_beta swapped", True, _rope(swapped=True)),
    Trap("yarn_only_beyond_context", "YaRN only beyond initial_context_length (gpt-oss scales every position)",
         True, _rope(dynamic=True)),
    Trap("rope_interleaved_pairs", "RoPE rotates interleaved pairs (2i, 2i+1); gpt-oss pairs dimension i with i+D/2",
         True, lambda m: [(attention, "apply_rope", _rotate_pairs)]),
    Trap("rope_q_only", "RoPE applied to the queries only, not the keys", True,
         lambda m: [(attention, "apply_rope", _rope_q_only)]),
    Trap("yarn_context_fixed", f"YaRN initial_context_length fixed at {R.initial_context_length} instead of the "
         "config's", False, _rope(initial_context_length=R.initial_context_length)),
    Trap("yarn_beta_fixed", f"YaRN ntk_beta fixed at {R.rope_ntk_beta:g} instead of the config's", False,
         _rope(rope_ntk_beta=R.rope_ntk_beta)),
    Trap("yarn_alpha_fixed", f"YaRN ntk_alpha fixed at {R.rope_ntk_alpha:g} instead of the config's", False,
         _rope(rope_ntk_alpha=R.rope_ntk_alpha)),
    Trap("yarn_factor_fixed", f"YaRN factor fixed at {R.rope_scaling_factor:g} instead of the config's", False,
         _rope(rope_scaling_factor=R.rope_scaling_factor)),
    Trap("rope_theta_fixed", f"rope_theta fixed at {R.rope_theta:g} instead of the config's", False,
         _rope(rope_theta=R.rope_theta)),
    # attention
    Trap("sinks_ignored", "attention sinks ignored (one extra logit per head in the softmax denominator)", True,
         _attn("no_sink")),
    Trap("sinks_scaled", "sink logit scaled by sm_scale (it joins the softmax unscaled)", True, _attn("sink_scaled")),
    Trap("window_plus_one", "sliding window admits W+1 keys (gpt-oss: positions p-W+1 .. p)", True, _attn("window+1")),
    Trap("window_minus_one", "sliding window admits W-1 keys (gpt-oss: positions p-W+1 .. p)", True,
         _attn("window-1")),
    Trap("window_none", "sliding window not applied", True, _attn("no_window")),
    Trap("window_odd_layers", "sliding window on the odd layers (gpt-oss: even layers 0, 2, ...)", True,
         _window(lambda self, layer: self.sliding_window if layer % 2 == 1 else None)),
    Trap("window_every_layer", "sliding window on every layer (gpt-oss: even layers only)", True,
         _window(lambda self, layer: self.sliding_window)),
    Trap("window_fixed", f"sliding window fixed at {R.sliding_window} instead of the config's", False,
         _config(sliding_window=R.sliding_window)),
    Trap("gqa_interleaved", "GQA: query head h reads kv head h % K (gpt-oss: h // (H/K))", True, _attn("interleaved")),
    Trap("attention_scale_1_over_d", "attention scores scaled by 1/D instead of 1/sqrt(D)", True,
         _attn(sm=lambda D: 1 / D)),
    Trap("qkv_bias_missing", "qkv bias not added", True, _weights("attn.qkv.bias")),
    Trap("out_bias_missing", "attention output bias not added", True, _weights("attn.out.bias")),
    # MoE
    Trap("route_softmax_all", "router softmax over ALL experts, then top-k (gpt-oss: softmax over the k chosen)",
         True, _route(traps.route_softmax_all)),
    # (softmax over all experts, top-k, renormalized, is the same function as gpt-oss's: not a trap at model level)
    Trap("router_bias_missing", "router (gate) bias not added", True, _weights("mlp.gate.bias")),
    Trap("expert_biases_missing", "expert biases (mlp1_bias, mlp2_bias) not added", True, _weights("expert biases")),
    Trap("swiglu_no_plus1", "SwiGLU without the +1 on the linear half", True, _swiglu(plus_one=False)),
    Trap("swiglu_no_clamp", "SwiGLU without the clamp (gate <= limit, linear in [-limit, limit])", True,
         _swiglu(clamp=False)),
    Trap("swiglu_gate_clamped_both", "SwiGLU gate clamped on both sides (gpt-oss: above only)", True,
         _swiglu(gate_both=True)),
    Trap("swiglu_split_halves", "SwiGLU gate/linear split in halves (mlp1 interleaves them)", True,
         _swiglu(split=True)),
    Trap("swiglu_alpha_1", "SiLU with alpha 1 instead of 1.702", True, _swiglu(alpha=1.0)),
    Trap("swiglu_limit_fixed", f"SwiGLU limit fixed at {R.swiglu_limit:g} instead of the config's swiglu_limit",
         False, _swiglu_limit(R.swiglu_limit)),
    Trap("mxfp4_nibble_order", "MXFP4: high nibble taken as the earlier element (the release packs low first)",
         True, _decode(high_first=True)),
    Trap("mxfp4_e8m0_bias_128", "MXFP4: E8M0 bias 128 instead of 127", True, _decode(bias=128)),
    Trap("mxfp4_e8m0_bias_126", "MXFP4: E8M0 bias 126 instead of 127", True, _decode(bias=126)),
    # norms, unembedding
    Trap("rms_eps_1e-6", "RMSNorm eps 1e-6 instead of 1e-5", True, _rms_eps(1e-6)),
    Trap("rms_eps_outside_sqrt", "RMSNorm eps added outside the square root", True,
         norm_everywhere(lambda x, s, eps=1e-5: x / (np.sqrt(np.mean(x * x, -1, keepdims=True)) + eps) * s)),
    Trap("layernorm", "LayerNorm (mean subtracted) instead of RMSNorm", True, _rms(center=True)),
    Trap("final_norm_missing", "final RMSNorm not applied before the unembedding", True,
         lambda m: [(rmodel, "rms_norm", lambda x, s, eps=1e-5: x)]),
    Trap("unembedding_tied", "unembedding tied to the embedding (gpt-oss has its own unembedding matrix)", True,
         _tied_unembedding),
]
BY_NAME = {t.name: t for t in TRAPS}
assert len(BY_NAME) == len(TRAPS)


# -- variant logits ---------------------------------------------------------------------------------------------
_MODELS: dict = {}
_LOGITS: dict = {}


def _model(checkpoint_dir) -> Model:
    key = str(checkpoint_dir)
    if key not in _MODELS:
        _MODELS[key] = Model(checkpoint_dir)
    return _MODELS[key]


def patched_stages(checkpoint_dir, tokens, patch_fns) -> dict[str, np.ndarray]:
    """The reference's float64 stages and "logits" (T, V) with every patch_fns(model) active (not cached)."""
    m = _model(checkpoint_dir)
    stages: dict = {}
    ropes = [fn.rope_over for fn in patch_fns if hasattr(fn, "rope_over")]
    if len(ropes) > 1:  # one table with every RoPE trap's changes
        patch_fns = [fn for fn in patch_fns if not hasattr(fn, "rope_over")] + [_rope(**{k: v for o in ropes
                                                                                           for k, v in o.items()})]
    with contextlib.ExitStack() as stack:
        for fn in patch_fns:
            for obj, attr, value in fn(m):
                stack.enter_context(mock.patch.object(obj, attr, value))
        with np.errstate(all="ignore"):
            stages["logits"] = m.forward(list(tokens), m.new_cache(), capture=stages)
    return stages


def patched_logits(checkpoint_dir, tokens, patch_fns) -> np.ndarray:
    return patched_stages(checkpoint_dir, tokens, patch_fns)["logits"]


def variant_stages(checkpoint_dir, tokens, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The reference's float64 stages and logits with the named traps planted together (cached)."""
    key = (str(checkpoint_dir), tuple(int(t) for t in tokens), tuple(sorted(names)))
    if key not in _LOGITS:
        _LOGITS[key] = patched_stages(checkpoint_dir, tokens, [BY_NAME[n].patches for n in sorted(names)])
    return _LOGITS[key]


def variant_logits(checkpoint_dir, tokens, names: tuple[str, ...]) -> np.ndarray:
    return variant_stages(checkpoint_dir, tokens, names)["logits"]


# -- the search -------------------------------------------------------------------------------------------------
@dataclass
class Diagnosis:
    names: tuple[str, ...]  # the traps of the best combination found (empty when none helps)
    err_variant: float  # the port's error against that variant
    err_reference: float  # ... and against the reference
    bound: float
    twins: dict = dataclasses.field(default_factory=dict)  # name -> traps with the same logits on this case
    stage: str = "logits"  # what was compared: the logits, or the stage stages/* found diverging first

    @property
    def explained(self) -> bool:
        return bool(self.names) and self.err_variant <= self.bound

    def message(self) -> str:
        if not self.names:
            return ""
        parts = []
        for n in self.names:
            t = BY_NAME[n]
            scope = ("changes gpt-oss-20b/120b as released" if t.released else
                     "only checkpoints whose config differs from the release's")
            twins = f"; the same logits here as {', '.join(self.twins[n])}" if self.twins.get(n) else ""
            parts.append(f"{t.what} [{n}: {scope}{twins}]")
        s = "s" if len(parts) > 1 else ""
        errs = (f"error {self.err_variant:.3g} against that variant, {self.err_reference:.3g} against the "
                f"reference")
        what = "the logits match" if self.stage == "logits" else f"stage {self.stage} matches"
        if self.explained:
            return f"; model-level diagnosis: {what} gpt-oss with known trap{s} " + " + ".join(parts) + \
                f" ({errs})"
        return (f"; model-level diagnosis: partly explained by known trap{s} " + " + ".join(parts)
                + f" ({errs}, bound {self.bound:.3g}: something else differs too)")


def explain(checkpoint_dir, tokens, got: np.ndarray, rows: np.ndarray, bound: float, traps_=TRAPS,
            stage: str = "logits") -> Diagnosis:
    """Greedy search for the traps whose variant best explains `got` (the port's logits, or another stage, for the
    LAST len(got) positions of `tokens`), compared on `rows` with the kit's error metric."""
    got = np.asarray(got, dtype=np.float64)
    n = len(got)

    def err(names):
        want = variant_stages(checkpoint_dir, tokens, names)[stage][-n:]
        return spec.err(got[rows], want[rows]) if np.all(np.isfinite(want[rows])) else math.inf

    chosen: tuple[str, ...] = ()
    twins: dict = {}
    best = err_ref = err(())
    while len(chosen) < MAX_TRAPS and best > bound:
        tried = {t.name: err(chosen + (t.name,)) for t in traps_ if t.name not in chosen}
        name = min(tried, key=tried.get) if tried else None
        if name is None:
            break
        if not tried[name] * STEP <= best:
            # two traps that only help together (llama.cpp's YaRN: bounds rounded AND alpha fixed at the release's):
            # pairs of the best singles, once, before giving up
            moved = [n for n in sorted(tried, key=tried.get) if tried[n] != best]  # traps that change this output
            top = moved[:PAIR_FROM] if len(chosen) + 2 <= MAX_TRAPS else []
            pairs = {pair: err(chosen + pair) for pair in itertools.combinations(top, 2)}
            pair = min(pairs, key=pairs.get) if pairs else None
            if pair is None or not pairs[pair] * STEP <= best:
                break
            chosen, best = chosen + pair, pairs[pair]
            continue
        twins[name] = [m for m, e in tried.items() if m != name and e == tried[name]]  # indistinguishable here
        chosen, best = chosen + (name,), tried[name]
    if not best * RATIO <= err_ref:  # the combination found does not explain the port: name nothing
        return Diagnosis((), err_ref, err_ref, bound, stage=stage)
    return Diagnosis(chosen, best, err_ref, bound, twins, stage)


def for_check(kit, case_name: str, tokens, got: np.ndarray, rows: np.ndarray, bound: float,
              stage: str = "logits") -> str:
    """The diagnosis of a failed model check (its logits, or the first failing stage of stages/*), as a message
    fragment. Runs on the kit's synthetic golden data only: on a user's real checkpoint each variant is a full
    float64 forward pass (minutes), times dozens."""
    if kit.golden.manifest.get("kind") != "synthetic":
        return ""
    d = explain(kit.golden.checkpoint_dir(case_name), tokens, got, rows, bound, stage=stage)
    return d.message()
