"""Op-level checks: each optional op_* capability against the golden op vectors (golden/data/ops/).

MXFP4 is exact in value (-0 equals +0); RoPE has an elementwise dtype-aware bound; the others use spec.bound (a
multiple of the plain same-dtype port's error). A failure names the op, the case, and a known trap the output matches.
"""
import numpy as np
import pytest

from conformance import spec, traps
from conformance.plugin import to_numpy
from conformance.session import check, need, record


def _shape(got, want, what):
    if got.shape != want.shape:
        pytest.fail(f"{what}: returned shape {got.shape}, expected {want.shape}", pytrace=False)


def _close_check(request, kit, name, g, got, ref, variants, args):
    b = spec.op_bound(g, kit.dtype)
    e = spec.err(got, ref)
    hint = ""
    if not e <= b:
        hint = traps.diagnose(variants, args, got, lambda a, w: spec.err(a, w) <= b)
    check(request, name, e, b, f"max |Δ| / rms(reference) over the case{hint}")


def test_op_mxfp4(kit, op_case, request):
    g = kit.golden.op("mxfp4", op_case)
    fn = need(kit.op_impl(), "op_mxfp4_decode")
    blocks, scales, ref = g["blocks"], g["scales"], g["out"]
    got = to_numpy(fn(blocks.copy(), scales.copy()), "op_mxfp4_decode").astype(np.float64)
    _shape(got, ref, "op_mxfp4_decode")
    usable = spec.representable(ref, spec.base_dtype(kit.dtype))
    wrong = usable & ~((got == ref) | (np.isnan(got) & np.isnan(ref)))  # values: -0 == +0
    n_wrong = int(wrong.sum())
    record(request, check=f"mxfp4/{op_case}", measured=n_wrong, bound=0, ok=n_wrong == 0,
           compared=int(usable.sum()), skipped_unrepresentable=int((~usable).sum()))
    if n_wrong:
        i = np.unravel_index(np.argmax(wrong), wrong.shape)
        byte = int(blocks.reshape(*blocks.shape[:-2], -1)[i[:-1] + (i[-1] // 2,)])
        scale = int(scales[i[:-1] + (i[-1] // 32,)])
        hint = traps.diagnose(traps.MXFP4, (blocks, scales), got,
                              lambda a, w: bool(np.all((a == w)[usable])))
        pytest.fail(f"mxfp4/{op_case}: {n_wrong} of {int(usable.sum())} decoded values differ (exact values required; "
                    f"-0 and +0 count as equal); "
                    f"first: byte 0x{byte:02x} ({'low' if i[-1] % 2 == 0 else 'high'} nibble), scale {scale}: "
                    f"got {float(got[i])!r}, expected {float(ref[i])!r}{hint}", pytrace=False)


def test_op_rms_norm(kit, op_case, request):
    g = kit.golden.op("rms_norm", op_case)
    fn = need(kit.op_impl(), "op_rms_norm")
    x, scale, eps = g["x"], g["scale"], float(g["eps"])
    got = to_numpy(fn(x.copy(), scale.copy(), eps), "op_rms_norm")
    _shape(got, g["out"], "op_rms_norm")
    _close_check(request, kit, f"rms_norm/{op_case}", g, got, g["out"], traps.RMS_NORM, (x, scale, eps))


def test_op_swiglu(kit, op_case, request):
    g = kit.golden.op("swiglu", op_case)
    fn = need(kit.op_impl(), "op_swiglu")
    h, limit = g["h"], float(g["limit"])
    got = to_numpy(fn(h.copy(), limit), "op_swiglu")
    _shape(got, g["out"], "op_swiglu")
    _close_check(request, kit, f"swiglu/{op_case}", g, got, g["out"], traps.SWIGLU, (h, limit))


def test_op_route(kit, op_case, request):
    g = kit.golden.op("route", op_case)
    fn = need(kit.op_impl(), "op_route")
    logits, k = g["logits"], int(g["k"])
    out = fn(logits.copy(), k)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        pytest.fail("op_route must return (expert_ids, weights)", pytrace=False)
    ids, w = to_numpy(out[0], "op_route ids").astype(np.int64), to_numpy(out[1], "op_route weights")
    _shape(ids, g["ids"], "op_route ids")
    _shape(w, g["weights"], "op_route weights")
    wrong = int(np.sum(np.any(ids != g["ids"], axis=-1)))
    record(request, check=f"route/{op_case}.ids", measured=wrong, bound=0, ok=wrong == 0)
    if wrong:
        t = int(np.argmax(np.any(ids != g["ids"], axis=-1)))
        pytest.fail(f"route/{op_case}: expert ids differ on {wrong} of {len(ids)} tokens (margins >= 0.25, so no "
                    f"tie can explain it); token {t}: got {ids[t].tolist()}, expected {g['ids'][t].tolist()} "
                    f"(ids in descending logit order)", pytrace=False)
    b = spec.op_bound(g, kit.dtype)
    e = spec.err(w, g["weights"])
    hint = "" if e <= b else traps.diagnose(traps.ROUTE, (logits, k), w, lambda a, want: spec.err(a, want[1]) <= b)
    check(request, f"route/{op_case}.weights", e, b, f"routing weights{hint}")


def test_op_rope(kit, op_case, request):
    g = kit.golden.op("rope", op_case)
    fn = need(kit.op_impl(), "op_rope_cos_sin")
    D, theta, f, icl, a, b = g["params"].tolist()
    params = (int(D), theta, f, int(icl), a, b)
    out = fn(g["positions"].copy(), *params)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        pytest.fail("op_rope_cos_sin must return (cos, sin)", pytrace=False)
    cos, sin = to_numpy(out[0], "op_rope_cos_sin cos"), to_numpy(out[1], "op_rope_cos_sin sin")
    _shape(cos, g["cos"], "op_rope_cos_sin cos")
    _shape(sin, g["sin"], "op_rope_cos_sin sin")
    conc = float(np.max(np.hypot(g["cos"], g["sin"])))
    bnd = spec.rope_bound(g["angles"], conc, spec.base_dtype(kit.dtype))
    ratio = np.maximum(np.abs(cos - g["cos"]), np.abs(sin - g["sin"])) / bnd
    worst = float(np.max(ratio)) if np.all(np.isfinite(ratio)) else np.inf
    hint = ""
    if not worst <= 1.0:
        t, i = np.unravel_index(np.nanargmax(np.where(np.isfinite(ratio), ratio, np.inf)), ratio.shape)
        hint = (f"; worst at position {int(g['positions'][t])}, frequency {i}: cos {float(cos[t, i])!r} vs {float(g['cos'][t, i])!r}"
                + traps.diagnose(traps.ROPE, (g["positions"], *params), (cos, sin),
                                 lambda got, want: bool(np.all(np.maximum(np.abs(got[0] - want[0]),
                                                                          np.abs(got[1] - want[1])) <= bnd))))
    check(request, f"rope/{op_case}", worst, 1.0,
          f"head_dim {int(D)}, theta {theta}, factor {f}: |Δ| / (dtype-aware ulp bound){hint}")


def test_op_attention(kit, op_case, request):
    g = kit.golden.op("attention", op_case)
    fn = need(kit.op_impl(), "op_attention")
    args = (g["q"], g["k"], g["v"], g["sinks"], float(g["sm_scale"]), int(g["window"]), g["q_pos"], g["k_pos"])
    got = to_numpy(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]), "op_attention")
    _shape(got, g["out"], "op_attention")
    T, H, D = g["q"].shape
    what = f"T={T} S={g['k'].shape[0]} H={H} K={g['k'].shape[1]} window={int(g['window'])}"
    _close_check(request, kit, f"attention/{op_case} ({what})", g, got, g["out"], traps.ATTENTION, args)
