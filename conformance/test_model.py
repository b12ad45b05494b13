"""Model-level checks on the golden checkpoints: logits (required), greedy continuation, and the optional
decode_logits, batch_logits and intermediates capabilities.

Compared positions: those whose routing is clear in every layer for the port's dtype (spec.ROUTE_CLEAR; SPEC.md
"Routing near-ties": a bf16 port may legitimately pick another expert at a near-tie, and that token's output then
differs by O(1)); for float32 and float64 ports that is every position.
Argmax tokens must agree wherever the reference's top-1 margin exceeds twice the port's own error on that row
(elsewhere a rounding difference may legitimately flip them). A failure names the first diverging stage
when the port exposes intermediates().
"""
import math

import numpy as np
import pytest

from conformance import diagnose, spec
from conformance.plugin import to_numpy
from conformance.session import need, record


def clear_rows(case: dict, dtype: str) -> np.ndarray:
    thresh = spec.FLOOR[dtype] if dtype == "float64" else spec.ROUTE_CLEAR * float(case[f"baseline.{dtype}.router_abs"])
    return np.all(case["route_margin"] >= thresh, axis=1)


def describe(stage: str, config) -> str:
    if stage.startswith("block."):
        _, n, part = stage.split(".", 2)
        n = int(n)
        if part == "attn":
            w = config.get("sliding_window") if n % 2 == 0 else None
            return (f"layer {n} attention (RMSNorm, qkv, RoPE/YaRN, GQA, sinks, "
                    + (f"sliding window {w}" if w else "full causal, no window") + ")")
        return f"layer {n} MoE (RMSNorm, router top-k + softmax over k, MXFP4 experts, SwiGLU clamp/+1)"
    return {"embedding": "embedding lookup", "norm": "final RMSNorm", "logits": "unembedding"}.get(stage, stage)


def first_divergence(kit, impl, case: dict, config: dict) -> str:
    """The first stage whose error exceeds its bound, as a message fragment; "after the exposed stages" only
    when stages were compared and every one is within its bound."""
    if not any(k.startswith("stage.") for k in case):
        return ""
    if not callable(getattr(impl, "intermediates", None)):
        return "; the port has no intermediates(), so the diverging stage cannot be named"
    got = impl.intermediates(case["tokens"].tolist())
    rows = clear_rows(case, kit.dtype)
    order = [k[len("stage."):] for k in case if k.startswith("stage.")]
    stages = [s for s in order if s.count(".") != 3 and s in got]  # residual stages, forward order
    stages.sort(key=lambda s: _stage_index(s))
    if not stages:
        return ("; intermediates() returned none of the golden stages (embedding, block.N.attn, block.N.mlp, norm, "
                "logits), so the diverging stage cannot be named")
    for s in stages:
        a = to_numpy(got[s], f"intermediates[{s!r}]")
        ref = case["stage." + s]
        if a.shape != ref.shape:
            return f"; first diverging stage: {s} ({describe(s, config)}): shape {a.shape}, expected {ref.shape}"
        e, b = spec.err(a[rows], ref[rows]), spec.case_bound(case, kit.dtype, s)
        if not e <= b:
            return f"; first diverging stage: {s} ({describe(s, config)}): error {e:.3g} > bound {b:.3g}"
    return (f"; the {len(stages)} exposed stages ({stages[0]} ... {stages[-1]}) are within their bounds: the "
            f"divergence is after the exposed stages")


def _stage_index(s: str) -> float:
    if s == "embedding":
        return -1
    if s.startswith("block."):
        _, n, part = s.split(".", 2)
        return int(n) * 2 + (0 if part == "attn" else 1)
    return {"norm": 1e6, "logits": 1e6 + 1}.get(s, 1e7)


def compare_logits(request, kit, name: str, got, case: dict, rows_used: np.ndarray, impl, config,
                   source: tuple[str, list[int]]) -> None:
    """Three sub-measurements, each recorded with its own bound and ok: the logits error, |Δ log p| on the
    reference's top tokens, argmax at clear positions. The check fails iff any of them fails, and says which.
    source: (golden case, tokens) whose last len(got) positions `got` covers, for the model-level diagnosis."""
    ref = case["logits"][: len(got)]
    rows = clear_rows(case, kit.dtype)[: len(got)] & rows_used[: len(got)]
    b = spec.case_bound(case, kit.dtype, "logits")
    e = spec.err(got[rows], ref[rows])
    lb = spec.case_bound(case, kit.dtype, "logprob")
    le = spec.logprob_err(got[rows], ref[rows])
    srt = -np.sort(-ref, axis=-1)
    row_err = np.max(np.abs(got - ref), axis=-1)
    margin_ok = rows & (srt[:, 0] - srt[:, 1] > spec.ARGMAX_CLEAR * row_err)
    wrong = margin_ok & (np.argmax(got, -1) != np.argmax(ref, -1))
    logits_ok, logprob_ok = bool(e <= b), bool(le <= lb)
    record(request, check=f"{name}.logprob", measured=le, bound=lb, ok=logprob_ok)
    record(request, check=f"{name}.argmax", measured=int(wrong.sum()), bound=0, ok=not wrong.any(),
           compared=int(margin_ok.sum()))
    record(request, check=name, measured=e, bound=b, ok=logits_ok, positions=int(rows.sum()))
    parts = [(f"logits error {e:.3g}", logits_ok, b),
             (f"|Δ log p| on the reference's top-{spec.LOGPROB_TOP} tokens {le:.3g}", logprob_ok, lb)]
    over = [f"{what} > bound {bound_:.3g}" for what, ok, bound_ in parts if not ok]
    within = [f"{what} within its bound {bound_:.3g}" for what, ok, bound_ in parts if ok]
    if wrong.any():
        t = int(np.argmax(wrong))
        over.append(f"argmax differs at {int(wrong.sum())} of {int(margin_ok.sum())} clear positions (bound 0; "
                    f"first: position {t}, got {int(np.argmax(got[t]))}, expected {int(np.argmax(ref[t]))})")
    if over:
        where = first_divergence(kit, impl, case, config)
        trap = diagnose.for_check(kit, source[0], source[1], got, rows, b)  # which known trap the logits match
        pytest.fail(f"{name}: " + "; ".join(over) + (f" ({'; '.join(within)})" if within else "")
                    + f"; {int(rows.sum())} of {len(rows)} positions compared{where}{trap}", pytrace=False)


def compare_top_logprobs(request, kit, name: str, top, case: dict, rows_used: np.ndarray, source) -> None:
    """A port that gives top-k log-probabilities, not logits (a server): at each clear position the reference's
    top-5 tokens must be among the port's k, with |Δ log p| within the logprob bound, and the port's top token must
    be the reference's wherever the reference's margin exceeds ARGMAX_CLEAR x that bound (SPEC.md section 2)."""
    ids, lps = (to_numpy(x, "top_logprobs").astype(np.float64) for x in top)
    ref = case["logits"][: len(ids)]
    if ids.shape != lps.shape or ids.ndim != 2 or len(ids) != len(ref):
        pytest.fail(f"{name}: top_logprobs returned ids {ids.shape} and logprobs {lps.shape}, expected [{len(ref)}, "
                    f"k] each", pytrace=False)
    rows = clear_rows(case, kit.dtype)[: len(ids)] & rows_used[: len(ids)]
    lb = spec.case_bound(case, kit.dtype, "logprob")
    want = np.argsort(-ref, axis=-1, kind="stable")[:, : spec.LOGPROB_TOP]
    ref_lp = np.take_along_axis(spec.log_softmax(ref), want, -1)
    missing, worst = [], 0.0
    for t in np.flatnonzero(rows):
        got = dict(zip(ids[t].astype(np.int64).tolist(), lps[t].tolist()))
        for j, tok in enumerate(want[t].tolist()):
            if tok not in got:
                missing.append((int(t), tok))
            else:
                worst = max(worst, abs(float(got[tok]) - float(ref_lp[t, j])))
    srt = -np.sort(-ref, axis=-1)
    margin_ok = rows & (srt[:, 0] - srt[:, 1] > spec.ARGMAX_CLEAR * lb)
    wrong = margin_ok & (ids[:, 0].astype(np.int64) != np.argmax(ref, -1))
    ok = bool(worst <= lb) and not missing
    record(request, check=f"{name}.logprob", measured=float(worst) if not missing else math.inf, bound=lb, ok=ok)
    record(request, check=f"{name}.argmax", measured=int(wrong.sum()), bound=0, ok=not wrong.any(),
           compared=int(margin_ok.sum()))
    over = []
    if missing:
        t, tok = missing[0]
        over.append(f"{len(missing)} of the reference's top-{spec.LOGPROB_TOP} tokens at clear positions are not "
                    f"among the port's top {ids.shape[1]} (first: position {t}, token {tok})")
    if worst > lb:
        over.append(f"|Δ log p| on the reference's top-{spec.LOGPROB_TOP} tokens {worst:.3g} > bound {lb:.3g}")
    if wrong.any():
        t = int(np.argmax(wrong))
        over.append(f"top token differs at {int(wrong.sum())} of {int(margin_ok.sum())} clear positions (first: "
                    f"position {t}, got {int(ids[t, 0])}, expected {int(np.argmax(ref[t]))})")
    if over:
        pytest.fail(f"{name} (top-{ids.shape[1]} log-probabilities): " + "; ".join(over)
                    + f"; {int(rows.sum())} of {len(rows)} positions compared", pytrace=False)


def _top_only(impl) -> bool:
    return not callable(getattr(impl, "logits", None)) and callable(getattr(impl, "top_logprobs", None))


def _setup(kit, case_name):
    case = kit.golden.case(case_name)
    ckpt = kit.golden.checkpoint_dir(case_name)
    config = kit.golden.manifest["checkpoints"][case_name]["config"]
    return case, kit.model_impl(ckpt), config


def _logits_array(x, T, V, what):
    a = to_numpy(x, what).astype(np.float64)
    if a.shape != (T, V):
        pytest.fail(f"{what}: returned shape {a.shape}, expected [{T}, {V}] (tokens x vocab_size)", pytrace=False)
    return a


def test_logits(kit, case, request):
    c, impl, config = _setup(kit, case)
    tokens = c["tokens"].tolist()
    T, V = c["logits"].shape
    if _top_only(impl):
        return compare_top_logprobs(request, kit, f"logits/{case}", impl.top_logprobs(list(tokens)), c,
                                    np.ones(T, bool), (case, tokens))
    got = _logits_array(impl.logits(list(tokens)), T, V, "logits")
    compare_logits(request, kit, f"logits/{case}", got, c, np.ones(T, bool), impl, config, (case, tokens))


def test_greedy(kit, case, request):
    """The reference's greedy continuation, fed back as tokens: the port's logits on prompt + continuation
    must match the reference's at every greedy step (one logits() call), and pick the same tokens."""
    c, impl, config = _setup(kit, case)
    T = len(c["tokens"])
    greedy = c["greedy.tokens"].tolist()
    seq = c["tokens"].tolist() + greedy[:-1]
    V = c["logits"].shape[1]
    steps = {"tokens": c["tokens"], "logits": c["greedy.logits"], "route_margin": c["greedy.route_margin"],
             **{k: v for k, v in c.items() if k.startswith("baseline.")}}
    if _top_only(impl):
        ids, lps = impl.top_logprobs(list(seq))
        return compare_top_logprobs(request, kit, f"greedy/{case}", (np.asarray(ids)[T - 1:], np.asarray(lps)[T - 1:]),
                                    steps, np.ones(len(greedy), bool), (case, seq))
    got = _logits_array(impl.logits(list(seq)), len(seq), V, "logits")[T - 1:]
    compare_logits(request, kit, f"greedy/{case}", got, steps, np.ones(len(greedy), bool), impl, config,
                   (case, seq))


def test_decode(kit, case, request):
    """decode_logits: prefill half the prompt, then one token at a time through the port's KV cache."""
    c, impl, config = _setup(kit, case)
    fn = need(impl, "decode_logits")
    tokens = c["tokens"].tolist()
    T, V = c["logits"].shape
    for prefill in spec.decode_prefills(T):
        got = _logits_array(fn(list(tokens), prefill), T, V, f"decode_logits(prefill={prefill})")
        compare_logits(request, kit, f"decode/{case}.prefill{prefill}", got, c, np.ones(T, bool), impl, config,
                       (case, tokens))


def test_batch(kit, case, request):
    """batch_logits: three ragged prefixes of the prompt in one call; each equals the rows of the full run."""
    c, impl, config = _setup(kit, case)
    fn = need(impl, "batch_logits")
    tokens = c["tokens"].tolist()
    T, V = c["logits"].shape
    lengths = spec.batch_lengths(T)
    out = fn([tokens[:n] for n in lengths])
    if len(out) != len(lengths):
        pytest.fail(f"batch_logits returned {len(out)} results for a batch of {len(lengths)}", pytrace=False)
    for i, (n, x) in enumerate(zip(lengths, out)):
        got = _logits_array(x, n, V, f"batch_logits row {i} (length {n})")
        compare_logits(request, kit, f"batch/{case}.row{i}", got, c, np.ones(T, bool), impl, config,
                       (case, tokens[:n]))


def test_stages(kit, case, request):
    """intermediates: every exposed stage within its own bound; routing ids equal where the margin is clear."""
    c, impl, config = _setup(kit, case)
    fn = need(impl, "intermediates")
    got = fn(c["tokens"].tolist())
    known = [k[len("stage."):] for k in c if k.startswith("stage.")]
    exposed = [s for s in known if s in got]
    if not exposed:
        pytest.fail(f"stages/{case}: intermediates() returned none of the stage names {known[:4]}...", pytrace=False)
    rows = clear = clear_rows(c, kit.dtype)
    failures, first = [], None
    for s in sorted(exposed, key=_stage_index):
        a, ref = to_numpy(got[s], f"intermediates[{s!r}]"), c["stage." + s]
        if s.endswith(("expert_ids", "expert_weights", "router_logits")):
            continue
        if a.shape != ref.shape:
            failures.append(f"{s}: shape {a.shape}, expected {ref.shape}")
            continue
        e, b = spec.err(a[rows], ref[rows]), spec.case_bound(c, kit.dtype, s)
        record(request, check=f"stages/{case}.{s}", measured=e, bound=b, ok=bool(e <= b))
        if not e <= b:
            failures.append(f"{s} ({describe(s, config)}): error {e:.3g} > bound {b:.3g}")
            first = first or (s, a, b)
    for n in range(config["num_hidden_layers"]):
        key = f"block.{n}.mlp.expert_ids"
        if key in got:
            ids = to_numpy(got[key], key).astype(np.int64)
            ref = c["stage." + key]
            same = np.all(np.sort(ids[clear], -1) == np.sort(ref[clear], -1), -1) if ids.shape == ref.shape else None
            if same is None or not same.all():
                failures.append(f"{key}: chosen experts differ at clear positions")
    if failures:
        trap = diagnose.for_check(kit, case, c["tokens"].tolist(), first[1], rows, first[2], stage=first[0]) \
            if first else ""  # which known trap the first diverging stage matches
        pytest.fail(f"stages/{case}: first diverging stage: " + "; then ".join(failures[:3]) + trap, pytrace=False)
