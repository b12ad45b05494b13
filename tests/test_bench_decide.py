"""bench/decide.py: the first GPU run's switches decided from a device check's summary.json (rows as bench/gpu.py
writes them; synthetic here, since no GPU runs the tests)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_decide", ROOT / "bench" / "decide.py")
decide = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decide)

NAN = float("nan")


def row(what, backend, setting, ms, fraction=0.5, note="", model="20b"):
    return dict(model=model, what=what, backend=backend, setting=setting, ms=ms, bytes=0, floor_ms=ms * fraction,
                fraction=fraction, note=note)


def engine(backend, ms, **kw):
    return row("engine decode", backend, "batch 1, ctx 1024", ms, **kw)


def summary():
    gemv = "path=gemv BLOCK_N_UP=16 BLOCK_N_DOWN=8 BLOCK_K=512 num_warps=4 num_stages=2"
    gemv2 = "path=gemv BLOCK_N_UP=8 BLOCK_N_DOWN=8 BLOCK_K=512 num_warps=2 num_stages=2"
    k8 = "kernel BLOCK_O=8 BLOCK_C=512 num_warps=4 num_stages=3"
    k16 = "kernel BLOCK_O=16 BLOCK_C=256 num_warps=4 num_stages=3"

    def lin(setting, ms, note):
        return row("linear sweep (graph)", "triton", setting, ms, note="2880x5120, 24 in turn; " + note)
    return {"stages": {}, "tests": {}, "bench": {
        "bench_triton": {"rows": [
            engine("triton", 10.0, fraction=0.62),
            row("moe kernels (graph)", "triton", "batch 1", 0.02, fraction=0.83),
            row("engine prefill", "triton", "2048 tokens", 100.0, fraction=0.41, note="20480 tok/s, chunks of 2048"),
            row("engine prefill", "triton", "2048 tokens chunk 1024", 101.0, fraction=0.40, note="chunks of 1024"),
            row("engine decode", "triton", "batch 1, ctx 1024", 20.0, fraction=0.55, model="120b"),
            row("engine decode", "triton", "batch 8, ctx 1024", 30.0, fraction=0.2)]},
        "bench_unfused": {"rows": [
            engine("triton-pdl", 9.0), engine("triton-pdl-noprefetch", 9.1), engine("triton-split-qkv", 10.1),
            engine("triton-cublas", NAN, note="FAILED RuntimeError: boom")]},
        "bench_sweep": {"rows": [
            row("moe sweep (graph)", "triton", "batch 1", 0.050, 0.70, note=f"4 experts; {gemv}"),
            row("moe sweep (graph)", "triton", "batch 1", 0.060, 0.60, note="4 experts; path=dot_scaled BLOCK_K=128"),
            row("moe sweep (graph)", "triton", "batch 1", 0.045, 0.78, note=f"4 experts; {gemv2}")]},
        "bench_linear": {"rows": [
            lin("qkv batch 1", 0.010, k8), lin("qkv batch 1", 0.009, k16),
            lin("qkv batch 1", 0.012, "torch steps (...)"),
            lin("qkv batch 1", 0.011, "qkv_rope_cache_write (qkv + RoPE + cache write, one kernel)"),
            lin("qkv batch 1", 0.014, "linear, then rope_cache_write (two kernels)"),
            lin("unembedding batch 1", 0.300, k8), lin("unembedding batch 1", 0.310, k16),
            lin("unembedding batch 1", 0.250, "torch steps (...)")]},
        "bench_attn": {"rows": [
            row("attention sweep", "triton", "8192 tokens, full layer", 2.0, note="tile 128 x 128, 8 warps"),
            row("attention sweep", "triton", "8192 tokens, window 128", 0.5, note="tile 128 x 64, 8 warps"),
            row("attention sweep", "triton", "8192 tokens, full layer", 1.5, note="tile 64 x 64, 8 warps"),
            row("attention sweep", "triton", "8192 tokens, window 128", 0.51, note="tile 64 x 64, 8 warps")]},
    }}


def _block(text, title):
    """The lines of the decision whose title line starts with `title`."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("* " + title))
    j = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("* ")), len(lines))
    return "\n".join(lines[i:j])


def test_each_decision_reads_its_rows():
    text = decide.report(summary())
    assert "CHANGE: triton-pdl wins; set ENABLED = True" in _block(text, "PDL on by default")
    assert "keep the default" in _block(text, "with PDL, the projections' L2 weight prefetch")
    assert "keep the default" in _block(text, "qkv + RoPE + cache write in one kernel")
    fused = _block(text, "fused projections")
    assert "triton-cublas: failed: FAILED RuntimeError: boom" in fused and "triton-unfused: missing" in fused
    assert "keep the default" in fused
    moe = _block(text, "MoE decode tiles")
    assert "CHANGE: path=gemv BLOCK_N_UP=8" in moe and "best fraction of copy bandwidth 0.780" in moe
    linear = _block(text, "decode projection tile")
    assert "keep the default" in linear  # 0.310 + 0.009 > 0.300 + 0.010 - the sum decides, not one projection
    assert "unembedding batch 1: the torch steps (0.25 ms) beat every kernel tile" in linear
    assert "qkv batch 1: the torch steps" not in linear
    assert "keep the default" in _block(text, "qkv + RoPE + cache write, the kernels alone")
    assert "keep the default" in _block(text, "prefill step")  # 1% apart: noise
    full = _block(text, "attention prefill tile (optimized/kernels/tuning.py PREFILL_TILE), 20b 8192 tokens, full")
    assert "CHANGE: 64 x 64, 8 warps wins" in full
    assert "keep the default" in _block(text, "attention prefill tile (optimized/kernels/tuning.py PREFILL_TILE), "
                                              "20b 8192 tokens, window")
    g = _block(text, "goals")
    assert "20b moe kernels (graph) batch 1: 0.830 (goal >= 0.80: met)" in g
    assert "20b engine decode batch 1, ctx 1024: 0.620 (goal >= 0.70: NOT met)" in g
    assert "120b engine decode batch 1, ctx 1024: 0.550" in g and "batch 8" not in g
    assert "20b engine prefill 2048 tokens: 0.410 (goal >= 0.50: NOT met)" in g and "chunk 1024:" not in g
    assert "120b at 32k context: no fit_120b_32k result" in g
    s = summary()
    s["fit"] = ["FIT gpt-oss-120b context 32768: peak 70.1 GiB, card 79.2 GiB, plan 69.6 GiB, prefill 9000 tok/s"]
    assert "    FIT gpt-oss-120b context 32768: peak 70.1 GiB" in _block(decide.report(s), "goals")


def test_missing_or_failed_default_decides_nothing():
    s = summary()
    s["bench"]["bench_triton"]["rows"][0]["ms"] = NAN
    text = decide.report(s)
    assert "default triton (PDL off): failed" in _block(text, "PDL on by default") and "CHANGE" not in _block(
        text, "PDL on by default")
    empty = decide.report({"stages": {}, "tests": {}, "bench": {}})
    assert "default triton (PDL off): missing; nothing decided" in empty
    assert "no 'moe sweep (graph)' rows" in empty and "no 'attention sweep' rows" in empty
    assert "CHANGE" not in empty


def test_noise_threshold():
    assert math.isclose(decide.NOISE, 0.03)
    lines = decide.verdict("t", ("a", {"ms": 1.0}), [("b", {"ms": 1 / 1.029}, "edit b")])
    assert "keep the default" in lines[-1]
    lines = decide.verdict("t", ("a", {"ms": 1.0}), [("b", {"ms": 1 / 1.031}, "edit b"), ("c", {"ms": 0.9}, "edit c")])
    assert lines[-1].endswith("c wins; edit c")


def test_main_reads_a_file_and_names_a_bad_one(tmp_path, capsys):
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(summary()))
    decide.main([str(p)])
    assert "==== decisions" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot read"):
        decide.main([str(tmp_path / "absent.json")])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="cannot read"):
        decide.main([str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="usage"):
        decide.main([])
