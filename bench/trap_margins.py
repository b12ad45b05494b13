"""How far each known trap moves a port's logits, in units of the kit's bounds, and the smallest perturbation
of each continuous quirk that the kit rejects (SPEC.md section 4: "bf16 margin" and "Detection thresholds").

  PYTHONPATH=. python bench/trap_margins.py [--golden DIR] [--thresholds-only | --margins-only]

Margins: err(variant, reference) / bound for every trap of conformance/diagnose.py on every golden case, at
bfloat16 and float32 bounds; the table shows the largest over the cases and where. A port with the trap and no
other error sits at that multiple of the bound; a real bf16 port adds its own rounding (<= ~0.3 of the bound),
so a margin of 2 or more fails with room to spare, and the diagnosis can name it (tests/test_conformance_diagnosis.py
plants each bug in a bf16 logits-only port). Thresholds: each quirk's parameter moved by a relative step delta
(a log grid from 1e-6 to 1), the smallest delta whose variant exceeds the bound on some case.
Float64 variants of the reference on the golden checkpoints; 2 CPU cores: about 4 minutes.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np

from conformance import diagnose, spec, traps
from golden import format as gformat
from reference import attention, moe, norm

DTYPES = ("bfloat16", "float32", "bfloat16+int8", "bfloat16+fp8")  # precision classes (SPEC.md section 3)


def load_cases(root: Path) -> list:
    m = gformat.verify(root)
    out = []
    for rel in sorted(m["files"]):
        if rel.startswith("cases/"):
            name = Path(rel).stem
            c = gformat.load_npz(root / rel)
            out.append((name, root / "checkpoints" / name, c["tokens"].tolist(), c["logits"],
                        {dt: spec.case_bound(c, dt, "logits") for dt in DTYPES}))
    return out


def margins(cases) -> list[tuple]:
    rows = []
    for t in diagnose.TRAPS:
        best = {dt: (0.0, "") for dt in DTYPES}
        for name, ckpt, tokens, ref, bounds in cases:
            e = spec.err(diagnose.variant_logits(ckpt, tokens, (t.name,)), ref)
            for dt in DTYPES:
                if e / bounds[dt] > best[dt][0]:
                    best[dt] = (e / bounds[dt], name)
        rows.append((t.name, *(best[dt] for dt in DTYPES), t.released))
    return rows


# quirk -> patches for a relative perturbation delta of its parameter
def _sink_offset(delta):  # sinks + delta (absolute: sinks are O(1) logits)
    def sdpa(q, k, v, sinks, q_pos, k_pos, window, _orig=attention.sdpa):
        return _orig(q, k, v, sinks + delta, q_pos, k_pos, window)
    return lambda m: [(attention, "sdpa", sdpa)]


def _scores_scale(delta):  # q.k / sqrt(D) * (1 + delta)
    def sdpa(q, k, v, sinks, q_pos, k_pos, window, _orig=attention.sdpa):
        return _orig(q * (1 + delta), k, v, sinks, q_pos, k_pos, window)
    return lambda m: [(attention, "sdpa", sdpa)]


def _rope_param(key, delta):
    def patches(m):
        c = m.config
        p = {"theta": c.rope_theta, "f": c.rope_scaling_factor}
        p[key] *= 1 + delta
        params = (c.head_dim, p["theta"], p["f"], c.initial_context_length, c.rope_ntk_alpha, c.rope_ntk_beta)
        return [(diagnose.rmodel, "cos_sin", lambda pos, inv, conc: traps.rope_variant(pos, *params))]
    return patches


def _swiglu_param(key, delta):
    def act(h, limit, alpha=moe.SWIGLU_ALPHA):
        if key == "alpha":
            return traps.swiglu_variant(h, limit, alpha=alpha * (1 + delta))
        return traps.swiglu_variant(h, limit * (1 + delta))
    return lambda m: [(moe, "swiglu", act)]


def _eps(delta):
    return diagnose.norm_everywhere(lambda x, s, eps=norm.EPS: traps.rms_variant(x, s, eps * (1 + delta)))


QUIRKS = {
    "attention sink offset (absolute, logits)": _sink_offset,
    "attention score scale (relative)": _scores_scale,
    "rope_theta (relative)": lambda d: _rope_param("theta", d),
    "YaRN factor (relative)": lambda d: _rope_param("f", d),
    "SwiGLU alpha 1.702 (relative)": lambda d: _swiglu_param("alpha", d),
    "SwiGLU limit (relative)": lambda d: _swiglu_param("limit", d),
    "RMSNorm eps 1e-5 (relative)": _eps,
}
GRID = [10.0 ** (e / 4) for e in range(-24, 1)]  # 1e-6 .. 1, four steps a decade


def thresholds(cases) -> list[tuple]:
    rows = []
    for quirk, make in QUIRKS.items():
        found = {dt: None for dt in DTYPES}
        for delta in GRID:
            worst = {dt: 0.0 for dt in DTYPES}
            for name, ckpt, tokens, ref, bounds in cases:
                e = spec.err(diagnose.patched_logits(ckpt, tokens, [make(delta)]), ref)
                for dt in DTYPES:
                    worst[dt] = max(worst[dt], e / bounds[dt])
            for dt in DTYPES:
                if found[dt] is None and worst[dt] > 1:
                    found[dt] = delta
            if all(found.values()):
                break
        rows.append((quirk, *(found[dt] for dt in DTYPES)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", type=Path, default=gformat.DATA_DIR)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--margins-only", action="store_true")
    g.add_argument("--thresholds-only", action="store_true")
    args = ap.parse_args(argv)
    cases = load_cases(args.golden)
    if not args.thresholds_only:
        print("| trap | " + " | ".join(f"{dt}: err / bound (case)" for dt in DTYPES) + " | changes the released models |")
        print("|---|" + "---:|" * len(DTYPES) + "---|")
        for name, *best, released in margins(cases):
            cols = " | ".join(f"{b:.3g} ({c})" for b, c in best)
            print(f"| {name} | {cols} | {'yes' if released else 'no'} |")
        sys.stdout.flush()
    if not args.margins_only:
        print("\n| quirk | " + " | ".join(f"smallest delta rejected at {dt} bounds" for dt in DTYPES) + " |")
        print("|---|" + "---:|" * len(DTYPES))
        fmt = lambda d: f"{d:.2g}" if d is not None else "> 1"  # noqa: E731
        for quirk, *found in thresholds(cases):
            print(f"| {quirk} | " + " | ".join(fmt(d) for d in found) + " |")


if __name__ == "__main__":
    main()
