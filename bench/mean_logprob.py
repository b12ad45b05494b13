"""Does a second statistic separate honest bf16 ports from perturbed ones better than the kit's max-based bound?
(issue: "mean |Δ log p| over every compared position"). For each port and golden case, over the clear positions:
max and mean |Δ log p| on the reference's top-5 tokens, each as a multiple of the honest bf16 port's (the bound is
FACTOR = 4 times the baseline, so a trap is caught where its multiple exceeds ~4).

  PYTHONPATH=. python bench/mean_logprob.py [--cases traps gqa2-top2 mqa-long]

Ports: golden/baseline.py's bf16 port (honest) and with one bug (tests/wrong_ports/bf16.py), this repository's
engine in bf16. Two CPU cores: about a minute.
"""
import argparse
import importlib.util
from pathlib import Path

import numpy as np

from conformance import spec
from conformance.test_model import clear_rows
from golden import format as gformat
from optimized import adapter

REPO = Path(__file__).resolve().parent.parent
PORTS = ["honest", "engine_bf16", "yarn_rounded", "route_softmax_all", "yarn_beta_fixed", "yarn_alpha_fixed",
         "swiglu_gate_clamped_both"]


def _bf16_ports():
    s = importlib.util.spec_from_file_location("wrong_ports_bf16", REPO / "tests" / "wrong_ports" / "bf16.py")
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m


def logprob_stats(got, ref, rows) -> tuple[float, float]:
    ids = np.argsort(-ref, axis=-1, kind="stable")[:, : spec.LOGPROB_TOP]
    d = np.abs(np.take_along_axis(spec.log_softmax(got), ids, -1) - np.take_along_axis(spec.log_softmax(ref), ids, -1))
    return float(d[rows].max()), float(d[rows].mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["traps", "gqa2-top2", "mqa-long"])
    args = ap.parse_args(argv)
    bugs = _bf16_ports()
    make = {name: getattr(bugs, name) for name in PORTS if name != "engine_bf16"} | {"engine_bf16": adapter.factory_bf16}
    print("| case | port | max |Δ log p| | x honest | mean |Δ log p| | x honest |")
    print("|---|---|---:|---:|---:|---:|")
    for case in args.cases:
        c = gformat.load_npz(gformat.DATA_DIR / "cases" / f"{case}.npz")
        tokens, rows = c["tokens"].tolist(), clear_rows(c, "bfloat16")
        base = None
        for name in PORTS:
            got = np.asarray(make[name](gformat.DATA_DIR / "checkpoints" / case).logits(tokens), dtype=np.float64)
            mx, mn = logprob_stats(got, c["logits"], rows)
            base = base or (mx, mn)
            print(f"| {case} | {name} | {mx:.4f} | {mx / base[0]:.2f} | {mn:.5f} | {mn / base[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
