"""`python -m conformance.quality --impl NAME`: how far a port's next-token distribution is from the reference's.

For ports that are not meant to be exact (a re-quantized model: int4, GGUF Q4/Q8, FP8; a pruned one), which
the kit's bounds fail by design: instead of pass/fail, the distance, measured the way quantizers compare models,
beside the yardstick of an honest bf16 implementation (the golden data's bf16 baseline). Every golden case: the
port's logits() on the prompt followed by the reference's greedy continuation (as test_greedy feeds it), each
position against the reference's float64 logits. Per case and over all positions:

  KL      KL(P_ref || P_port) in nats, mean and max over positions (llama.cpp's KLD statistic)
  top-1   fraction of positions where the port's argmax is the reference's (ties in the reference are rare)
  dp      mean |p_ref(t) - p_port(t)| for the reference's top token t
  dlogp   max |log p_ref(t) - log p_port(t)| over the reference's top-5 tokens (the kit's logprob measure)
  bf16    the golden bf16 baseline's dlogp on the same case (an honest bf16 implementation's error)

With --stages and a port that exposes intermediates(): where the distance grows, layer by layer, on the prompt:
each stage's relative error ||port - ref|| / ||ref|| (the residual stream after each attention and MoE block, the
final norm; a quantization's damage shows where it enters), and the share of tokens routed to the same experts.

  python -m conformance.quality --impl mypkg.q4:factory                       # the kit's synthetic golden data
  python -m conformance.quality --impl mypkg.q4:factory --golden g20b/        # from your real checkpoint
  python -m conformance.quality --impl NAME --json out.json                   # the numbers, per position too
  python -m conformance.quality --impl NAME --stages                          # and layer by layer

On random synthetic weights only relative statements hold (yours against the bf16 row); on golden data from a real
checkpoint (`python -m golden --checkpoint`, with your own prompts via --tokens) the numbers are the real model's.
Legend: T positions, V vocabulary.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from conformance import plugin
from conformance.session import Golden, golden_tier
from golden.derived import LAYOUTS
from golden.real import ensure
from golden import format as gformat
from golden.metric import LOGPROB_TOP, log_softmax


def distance(ref: np.ndarray, got: np.ndarray) -> dict:
    """Per-position distances of got (T, V) from ref (T, V), both logits."""
    assert ref.shape == got.shape and ref.ndim == 2, (ref.shape, got.shape)
    lr, lg = log_softmax(ref.astype(np.float64)), log_softmax(got.astype(np.float64))
    pr = np.exp(lr)
    kl = np.maximum((pr * (lr - lg)).sum(axis=-1), 0.0)  # >= 0 up to rounding
    top = np.argmax(ref, axis=-1)
    rows = np.arange(ref.shape[0])
    top5 = np.argsort(-ref, axis=-1, kind="stable")[:, :LOGPROB_TOP]
    return {"kl": kl, "top1": np.argmax(got, axis=-1) == top,
            "dp": np.abs(pr[rows, top] - np.exp(lg[rows, top])),
            "dlogp": np.abs(np.take_along_axis(lr, top5, -1) - np.take_along_axis(lg, top5, -1)).max(axis=-1)}


def sequence(case: dict) -> tuple[list[int], np.ndarray]:
    """The prompt then the reference's greedy continuation (its last token not fed), and the reference's logits
    at every position of that sequence."""
    T = len(case["tokens"])
    greedy = case["greedy.tokens"].tolist() if "greedy.tokens" in case else []
    seq = case["tokens"].tolist() + greedy[:-1]
    ref = np.concatenate([case["logits"][:T - 1], case["greedy.logits"]]) if greedy else case["logits"]
    assert ref.shape[0] == len(seq), (ref.shape, len(seq))
    return seq, ref


def stage_distance(case: dict, got: dict) -> dict:
    """{stage: relative error} for every stage both have, and {block.N.mlp.expert_ids: share of tokens whose
    chosen experts (as sets) are the reference's}."""
    out = {}
    for key, value in got.items():
        ref = case.get("stage." + key)
        if ref is None or key.endswith(("expert_weights", "router_logits")):
            continue
        a = plugin.to_numpy(value, f"intermediates[{key!r}]")
        if a.shape != ref.shape:
            raise plugin.ImplError(f"intermediates[{key!r}]: shape {a.shape}, expected {list(ref.shape)}")
        if key.endswith("expert_ids"):
            out[key] = float(np.all(np.sort(a.astype(np.int64), -1) == np.sort(ref, -1), -1).mean())
        else:
            out[key] = float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))
    return out


def measure(factory, golden: Golden, stages: bool = False) -> list[dict]:
    """One row per golden case (and the port made once per checkpoint, as the kit does)."""
    out, impls = [], {}
    for name in golden.listing()["cases"]:
        case = golden.case(name)
        key = str(golden.checkpoint_dir(name))
        impl = impls[key] = impls[key] if key in impls else factory(key)
        if not callable(getattr(impl, "logits", None)):
            raise plugin.ImplError("the object from the factory has no logits() method")
        seq, ref = sequence(case)
        got = plugin.to_numpy(impl.logits(list(seq)), "logits")
        if got.shape != ref.shape:
            raise plugin.ImplError(f"logits: returned shape {got.shape} for {len(seq)} tokens, expected "
                                   f"{list(ref.shape)}")
        if not np.all(np.isfinite(got)):
            raise plugin.ImplError(f"logits: non-finite values for case {name}")
        d = distance(ref, got)
        bf16 = case.get("baseline.bfloat16.logprob")
        out.append({"case": name, "positions": len(seq), "per_position": {k: v.tolist() for k, v in d.items()},
                    **summary(d), "bf16_dlogp": None if bf16 is None else float(bf16)})
        if stages:
            if not callable(getattr(impl, "intermediates", None)):
                raise plugin.ImplError("--stages needs the port's intermediates() (see the plugin protocol)")
            out[-1]["stages"] = stage_distance(case, impl.intermediates(case["tokens"].tolist()))
    return out


def _stage_order(key: str) -> tuple:
    parts = key.split(".")
    if parts[0] == "block":
        return (1, int(parts[1]), parts[2] != "attn", key)
    return ({"embedding": 0, "norm": 2, "logits": 3}.get(parts[0], 4), 0, False, key)


def stage_table(rows: list[dict]) -> str:
    """Rows: stages in model order; columns: cases; relative errors (expert_ids: same-experts share)."""
    keys = sorted({k for r in rows for k in r["stages"]}, key=_stage_order)
    lines = ["| stage | " + " | ".join(r["case"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for k in keys:
        cells = []
        for r in rows:
            v = r["stages"].get(k)
            cells.append("" if v is None else f"{100 * v:.1f}% same" if k.endswith("expert_ids") else f"{v:.3g}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(d: dict) -> dict:
    return {"kl_mean": float(d["kl"].mean()), "kl_max": float(d["kl"].max()), "top1": float(d["top1"].mean()),
            "dp_mean": float(d["dp"].mean()), "dlogp_max": float(d["dlogp"].max())}


def table(rows: list[dict]) -> str:
    pooled = {k: np.concatenate([np.asarray(r["per_position"][k]) for r in rows]) for k in rows[0]["per_position"]}
    lines = ["| case | positions | KL mean | KL max | top-1 | dp mean | dlogp max | bf16 dlogp |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [{"case": "**all**", "positions": len(pooled["kl"]), **summary(pooled), "bf16_dlogp": None}]:
        bf16 = "" if r["bf16_dlogp"] is None else f"{r['bf16_dlogp']:.3g}"
        lines.append(f"| {r['case']} | {r['positions']} | {r['kl_mean']:.3g} | {r['kl_max']:.3g} | "
                     f"{100 * r['top1']:.1f}% | {r['dp_mean']:.3g} | {r['dlogp_max']:.3g} | {bf16} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m conformance.quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", required=True, help="as the kit's --impl (package.module:factory, file.py:factory, "
                                                  "exec:COMMAND, or a built-in: reference, optimized, transformers, "
                                                  "mlx, keras-hub)")
    ap.add_argument("--golden", default=None, help="golden data folder (default golden/data), or real-20b / real-120b "
                                                   "(the real-shape tier, generated on first use)")
    ap.add_argument("--layout", default=None, choices=LAYOUTS, help="the checkpoint form the port is handed "
                                                                    "(default: the golden data's own)")
    ap.add_argument("--dtype", default=None, help="for the built-in impls: selects their bf16 factory")
    ap.add_argument("--device", default=None, choices=["cpu", "cuda"], help="for the built-in impls")
    ap.add_argument("--json", type=Path, default=None, help="also write every number (per position too) here")
    ap.add_argument("--stages", action="store_true", help="also each stage's relative error (needs intermediates())")
    args = ap.parse_args(argv)
    try:
        factory, spec = plugin.resolve(args.impl, args.dtype, args.device)
        tier = golden_tier(args.golden)
        root = ensure(tier)[0] if tier else (args.golden or gformat.DATA_DIR)
        args.layout = args.layout or ("hf" if tier else "original")
        rows = measure(factory, Golden(root, args.layout), args.stages)
    except (plugin.ImplError, gformat.GoldenError, TypeError, ValueError) as e:
        sys.exit(f"conformance.quality: {type(e).__name__}: {e}")
    print(f"distance from the reference: --impl {args.impl} ({spec}), golden {args.golden or gformat.DATA_DIR}")
    print(table(rows))
    if args.stages:
        print("\nrelative error of each stage on the prompt (||port - ref|| / ||ref||); expert_ids: tokens routed to "
              "the same experts")
        print(stage_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"impl": args.impl, "layout": args.layout, "cases": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
