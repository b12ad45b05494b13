"""The switches BENCHMARKS.md leaves to the first GPU run, decided from a device check's summary.json.

    python bench/decide.py OUT/summary.json        # bench/device_check.sh runs it last, on the GPU machine

Each decision of BENCHMARKS.md "Decisions waiting on the first GPU run" compares the rows that decide it: the
engine's default against its alternatives, lower time wins, and an alternative must beat the default by more
than NOISE (3%: run-to-run spread on a graphed step is ~1%) to change anything. One block a decision: the
times, the verdict, and the edit it asks for (file and constant) or "keep". A decision whose rows are missing or
failed (NaN) says so and decides nothing. Then the goals of issues 6, 7 and 8 with their measured fractions.
Reads only the JSON: no GPU, no torch, so it runs anywhere the summary is (tests/test_bench_decide.py).
"""
import json
import math
import re
import sys

NOISE = 0.03
GOALS = {"moe kernels (graph)": 0.80, "engine decode": 0.70, "engine prefill": 0.50}  # issues 6, 8 (8), 8


def all_rows(summary: dict) -> list[dict]:
    """Every bench row of the summary, each tagged with the bench stage ("source") it came from."""
    out = []
    for source, bench in summary.get("bench", {}).items():
        for r in bench.get("rows", []):
            out.append(dict(r, source=source))
    return out


def _ok(r) -> bool:
    ms = r.get("ms")
    return isinstance(ms, (int, float)) and math.isfinite(ms) and ms > 0


def pick(rows, note_has=None, **match) -> list[dict]:
    """Rows whose fields equal `match` (and whose note contains note_has), failed ones (NaN) included."""
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())
            and (note_has is None or note_has in r.get("note", ""))]


def verdict(title: str, default: tuple, alternatives: list[tuple]) -> list[str]:
    """default (label, row or None); alternatives [(label, row or None, edit)]. The lines of one decision."""
    lines = [f"* {title}"]
    d_label, d_row = default
    if d_row is None or not _ok(d_row):
        why = "missing" if d_row is None else "failed: " + d_row.get("note", "")[:120]
        return lines + [f"    default {d_label}: {why}; nothing decided"]
    lines.append(f"    default {d_label}: {d_row['ms']:.4g} ms")
    best = None
    for label, row, edit in alternatives:
        if row is None or not _ok(row):
            lines.append(f"    {label}: " + ("missing" if row is None else "failed: " + row.get("note", "")[:120]))
            continue
        gain = d_row["ms"] / row["ms"] - 1
        lines.append(f"    {label}: {row['ms']:.4g} ms ({abs(gain):.1%} {'faster' if gain >= 0 else 'slower'} than "
                     f"the default)")
        if gain > NOISE and (best is None or row["ms"] < best[1]["ms"]):
            best = (label, row, edit)
    if best is None:
        lines.append(f"    -> keep the default (no alternative faster by more than {NOISE:.0%})")
    else:
        lines.append(f"    -> CHANGE: {best[0]} wins; {best[2]}")
    return lines


def _first(rows):
    return rows[0] if rows else None


def decide_engine_variants(rows, model="20b", setting="batch 1, ctx 1024") -> list[str]:
    """PDL, its prefetch, the fused qkv + RoPE + cache write, the fused projections and router: engine decode rows
    of the backend variants (bench/gpu.py VARIANTS)."""
    def engine(backend):
        return _first(pick(rows, model=model, what="engine decode", backend=backend, setting=setting))
    out = verdict(f"PDL on by default (optimized/kernels/pdl.py ENABLED), {model} decode {setting}",
                  ("triton (PDL off)", engine("triton")),
                  [("triton-pdl", engine("triton-pdl"), "set ENABLED = True in optimized/kernels/pdl.py")])
    out += verdict(f"with PDL, the projections' L2 weight prefetch (optimized/kernels/pdl.py PREFETCH), {model} decode "
                   f"{setting}", ("triton-pdl (prefetch on)", engine("triton-pdl")),
                   [("triton-pdl-noprefetch", engine("triton-pdl-noprefetch"),
                     "set PREFETCH = False in optimized/kernels/pdl.py")])
    out += verdict(f"qkv + RoPE + cache write in one kernel (ops.qkv_rope_cache_write), {model} decode {setting}",
                   ("triton (one kernel)", engine("triton")),
                   [("triton-split-qkv", engine("triton-split-qkv"),
                     "drop qkv_rope_cache_write from the triton backend (optimized/ops.py; bench VARIANTS "
                     "'split-qkv')")])
    out += verdict(f"fused projections and router (ops.linear, ops.routed_moe), {model} decode {setting}",
                   ("triton (fused)", engine("triton")),
                   [("triton-cublas", engine("triton-cublas"),
                     "drop linear and routed_moe from the triton backend (bench VARIANTS 'cublas')"),
                    ("triton-unfused", engine("triton-unfused"),
                     "drop every fused op from the triton backend (bench VARIANTS 'unfused')")])
    return out


def _config_of(note: str) -> str:
    """'...; path=gemv BLOCK_N_UP=16 ...' -> 'path=gemv BLOCK_N_UP=16 ...' (a sweep row's configuration: the MoE
    sweep's path and tiles, the linear sweep's 'kernel BLOCK_O=...' or torch steps)."""
    return note.split("; ", 1)[-1]


def decide_moe_tiles(rows) -> list[str]:
    out = []
    for model in sorted({r["model"] for r in pick(rows, what="moe sweep (graph)")}):
        sweep = pick(rows, model=model, what="moe sweep (graph)")
        alts = [(_config_of(r.get("note", "")), r,
                 f"GEMV_CONFIG (and the path at batch 1) of optimized/kernels/tuning.py to "
                 f"{_config_of(r.get('note', ''))}") for r in sweep[1:]]
        out += verdict(f"MoE decode tiles at batch 1 (optimized/kernels/tuning.py GEMV_CONFIG), {model}",
                       (_config_of(sweep[0].get("note", "")), sweep[0]), alts)
        best = max((r for r in sweep if _ok(r)), key=lambda r: r.get("fraction", 0), default=None)
        if best is not None:
            out.append(f"    best fraction of copy bandwidth {best['fraction']:.3f} (issue 6 goal >= 0.80): "
                       f"{_config_of(best.get('note', ''))}")
    return out or ["* MoE decode tiles: no 'moe sweep (graph)' rows; nothing decided"]


def decide_linear_tiles(rows, model="20b") -> list[str]:
    """LINEAR_CONFIG is one tile for every projection: the tile with the least summed time over the projections
    wins; per projection, a note where the torch steps beat every kernel tile; qkv + RoPE one kernel or two."""
    sweep = pick(rows, model=model, what="linear sweep (graph)")
    if not sweep:
        return ["* decode projection tile (optimized/kernels/tuning.py LINEAR_CONFIG): no 'linear sweep (graph)' rows"]
    settings = list(dict.fromkeys(r["setting"] for r in sweep))
    tiles = list(dict.fromkeys(_config_of(r["note"]) for r in sweep if "; kernel " in r["note"]))
    total = {}
    for tile in tiles:
        times = [_first(pick(sweep, setting=s, note_has="; " + tile)) for s in settings]
        total[tile] = None if any(t is None or not _ok(t) for t in times) else sum(t["ms"] for t in times)

    def as_row(tile):
        return None if total.get(tile) is None else {"ms": total[tile]}
    out = verdict(f"decode projection tile (optimized/kernels/tuning.py LINEAR_CONFIG), {model}, summed over "
                  f"{', '.join(settings)}", (tiles[0] if tiles else "none", as_row(tiles[0]) if tiles else None),
                  [(t, as_row(t), f"LINEAR_CONFIG = {t[len('kernel '):]}") for t in tiles[1:]])
    for s in settings:
        kernels = [r for r in pick(sweep, setting=s, note_has="; kernel ") if _ok(r)]
        torch_steps = [r for r in pick(sweep, setting=s, note_has="torch steps") if _ok(r)]
        if kernels and torch_steps and torch_steps[0]["ms"] * (1 + NOISE) < min(r["ms"] for r in kernels):
            out.append(f"    {s}: the torch steps ({torch_steps[0]['ms']:.4g} ms) beat every kernel tile "
                       f"({min(r['ms'] for r in kernels):.4g} ms): route this projection to cuBLAS + its own "
                       f"RMSNorm / add")
    one = _first(pick(sweep, setting="qkv batch 1", note_has="qkv_rope_cache_write ("))
    two = _first(pick(sweep, setting="qkv batch 1", note_has="two kernels"))
    out += verdict(f"qkv + RoPE + cache write, the kernels alone, {model} qkv batch 1",
                   ("one kernel (qkv_rope_cache_write)", one),
                   [("linear, then rope_cache_write", two, "drop qkv_rope_cache_write from the triton backend")])
    return out


def decide_prefill_step(rows) -> list[str]:
    out = []
    for r in pick(rows, what="engine prefill", backend="triton"):
        m = re.fullmatch(r"(\d+) tokens", r["setting"])
        if not m:
            continue
        old = _first(pick(rows, what="engine prefill", backend="triton", model=r["model"],
                          setting=f"{m.group(1)} tokens chunk 1024"))
        if old is None:
            continue  # the engine's step is 1024 here, or the prompt fits one step either way
        out += verdict(f"prefill step (optimized/generate.py default_prefill_tokens), {r['model']} {r['setting']}",
                       (f"the engine's step ({r.get('note', '').split('chunks of ')[-1].split(',')[0]} tokens)", r),
                       [("chunk 1024", old, f"default_prefill_tokens back to 1024 for {r['model']}")])
    return out or ["* prefill step: no 'engine prefill' rows with a 'chunk 1024' twin; nothing decided"]


def decide_attention_tile(rows) -> list[str]:
    """ATTN_SWEEP's first entry is the engine's PREFILL_TILE; rows come tile by tile, each over the same settings."""
    sweep = pick(rows, what="attention sweep")
    out = []
    for model in sorted({r["model"] for r in sweep}):
        for setting in dict.fromkeys(r["setting"] for r in pick(sweep, model=model)):
            same = pick(sweep, model=model, setting=setting)
            tile = lambda r: r.get("note", "").split("tile ")[-1]  # noqa: E731
            out += verdict(f"attention prefill tile (optimized/kernels/tuning.py PREFILL_TILE), {model} {setting}",
                           (tile(same[0]), same[0]),
                           [(tile(r), r, f"PREFILL_TILE to {tile(r)} for this kind of layer") for r in same[1:]])
    return out or ["* attention prefill tile: no 'attention sweep' rows; nothing decided"]


def goals(rows, fit=None) -> list[str]:
    out = ["* goals (fraction of the floor each row reached; bench/gpu.py's floors)"]
    for what, goal in GOALS.items():
        for r in pick(rows, what=what, backend="triton"):
            if what != "engine prefill" and not r["setting"].startswith("batch 1"):
                continue
            if "chunk" in r["setting"]:
                continue
            f = r.get("fraction")
            if not _ok(r) or not isinstance(f, (int, float)) or not math.isfinite(f):
                out.append(f"    {r['model']} {what} {r['setting']}: failed")
                continue
            out.append(f"    {r['model']} {what} {r['setting']}: {f:.3f} (goal >= {goal:.2f}: "
                       f"{'met' if f >= goal else 'NOT met'})")
    # the memory goal: gpt-oss-120b with a 32k context on one card (bench/gpu_check.py --fit, stage fit_120b_32k)
    out += [f"    {line}" for line in fit] if fit else ["    120b at 32k context: no fit_120b_32k result"]
    return out


def report(summary: dict) -> str:
    rows = all_rows(summary)
    lines = ["==== decisions (bench/decide.py; BENCHMARKS.md 'Decisions waiting on the first GPU run') ===="]
    for part in (decide_engine_variants(rows), decide_moe_tiles(rows), decide_linear_tiles(rows),
                 decide_prefill_step(rows), decide_attention_tile(rows), goals(rows, summary.get("fit"))):
        lines += part
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python bench/decide.py SUMMARY_JSON (bench/device_check.sh writes it)")
    try:
        with open(argv[0]) as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"bench/decide.py: cannot read {argv[0]}: {e}")
    print(report(summary))


if __name__ == "__main__":
    main()
