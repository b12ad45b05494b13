"""The GPU scripts' CPU parts: bench/gpu.py --smoke (the benchmark harness end to end on a tiny config, Triton
interpreter: its table and JSON; its --moe-sweep) and bench/gpu_check.py --device cpu. They check that the
scripts work, never how fast anything is."""
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_smoke_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    try:
        import transformers  # noqa: F401
        hf = ["--hf"]
    except ImportError:
        hf = []
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--json", str(out), *hf], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "| model | what | backend | setting | ms | floor ms | fraction of floor | note |" in text
    assert "anchors 20b: HBM floor 3.708 GB/token" in text and "SGLang 211.5 tok/s" in text
    data = json.loads(out.read_text())
    assert data["header"]["copy_GBps"] > 0 and data["header"]["matmul_TFLOPs"] > 0
    rows = data["rows"]
    kinds = {(r["what"], r["backend"]) for r in rows}
    assert kinds == {("moe kernels (graph)", "triton"), ("attention decode", "triton"), ("attention decode", "torch"),
                     ("attention prefill", "triton"), ("attention prefill", "torch"),
                     ("engine decode", "triton"), ("engine decode", "torch"), ("engine prefill", "triton"),
                     ("engine prefill", "torch"), ("engine kernels", "triton"), ("engine kernels", "torch")} | ({("engine decode", "transformers"),
                                                       ("engine prefill", "transformers")} if hf else set()), kinds
    prefill = {r["setting"] for r in rows if r["what"] == "attention prefill"}
    assert prefill == {"20 tokens, full layer", "20 tokens, window 8"}, prefill
    for r in rows:
        assert f"| {r['model']} | {r['what']} | {r['backend']} | {r['setting']} |" in text
        if r["what"] == "engine kernels":  # a step's make-up (on CPU: its top-level ops), no floor
            assert "FAILED" not in r["note"] and r["ms"] > 0 and "kernels a step" in r["note"], r
            assert sum(c for c, _ in r["kernels"].values()) > 0
            continue
        assert r["ms"] > 0 and r["floor_ms"] > 0 and math.isfinite(r["fraction"]) and r["fraction"] > 0, r


def test_gpu_check_script_runs_its_cpu_part():
    """`python bench/gpu_check.py --device cpu`: the engine's GPU check script runs its tiny-checkpoint part
    on CPU (no graphs; the Triton ops in the interpreter, fp32) and every check passes."""
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failed checks" in proc.stdout
    for name in ("fp32 logits vs reference", "fp32 triton backend == torch backend (decode)", "bf16 ragged batch"):
        assert f"PASS tiny {name}" in proc.stdout, name


def test_gpu_check_fit_runs_a_whole_context_on_cpu():
    """`python bench/gpu_check.py --device cpu --fit`: the memory-goal part (on a GPU: gpt-oss-120b through a
    32768-token context) runs on the tiny config: the prompt fills the context, the decode steps follow, FIT line."""
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--fit"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS tiny (cpu smoke) context 64: a 60-token prompt, then 4 decode steps" in proc.stdout
    assert "FIT tiny (cpu smoke) context 64: peak nan GiB" in proc.stdout and "0 failed checks" in proc.stdout


def test_bench_gpu_moe_sweep_runs_each_path(tmp_path):
    """`bench/gpu.py --moe-sweep` switches optimized.kernels.moe between its batch-1 paths (on CPU: the GEMV
    entry and the first tensor-core one; a GPU runs every MOE_SWEEP entry), one row each, none failed."""
    out = tmp_path / "sweep.json"
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--skip", "attention,engine", "--moe-sweep",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["moe sweep (graph)"] * 2
    assert "path=gemv" in rows[0]["note"] and "path=dot_scaled" in rows[1]["note"]
    for r in rows:
        assert "FAILED" not in r["note"] and r["ms"] > 0 and math.isfinite(r["fraction"]), r


def test_bench_gpu_linear_sweep_runs_each_variant(tmp_path):
    """`bench/gpu.py --linear-sweep` times each decode projection with the linear kernel (on CPU: LINEAR_CONFIG's
    tile; a GPU runs every LINEAR_SWEEP entry) and as the torch steps, and qkv with RoPE + cache write in one kernel
    and in two: one row each, none failed, LINEAR_CONFIG restored after."""
    out = tmp_path / "linear.json"
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--skip", "moe,attention,engine",
                           "--linear-sweep", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["what"] for r in rows} == {"linear sweep (graph)"}
    by = {}
    for r in rows:
        assert "FAILED" not in r["note"] and r["ms"] > 0 and math.isfinite(r["fraction"]) and r["bytes"] > 0, r
        by.setdefault(r["setting"], []).append(r["note"].split("; ", 1)[1])
    assert list(by) == ["qkv batch 1", "out batch 1", "router batch 1", "unembedding batch 1", "unembedding batch 4"]
    for setting, notes in by.items():
        assert notes[0].startswith("kernel BLOCK_O=8 BLOCK_C=512") and notes[1].startswith("torch steps"), notes
    assert len(by["qkv batch 1"]) == 4 and by["qkv batch 1"][2].startswith("qkv_rope_cache_write"), by
    assert all(len(n) == 2 for s, n in by.items() if s != "qkv batch 1"), by


def test_layer_pattern_finds_a_layers_kernels():
    """bench/gpu.py's kernels_row splits a step's kernels into the repeated layer and the rest: layer_pattern finds
    the longest period that repeats `layers` times (not a run of one kernel), None where nothing does."""
    gpu = _bench_gpu()
    layer = ["qkv", "attn", "linear", "router", "up", "down"]
    names = ["embed", "gather", "gather", "gather"] + layer * 3 + ["linear", "cast"]
    assert gpu.layer_pattern(names, 3) == (4, 6)
    assert gpu.layer_pattern(["a", "b", "a", "b"], 2) == (0, 2)
    assert gpu.layer_pattern(["a", "b", "c"], 2) is None


def _bench_gpu():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return gpu


def test_tuning_override_is_read_at_launch_and_restored():
    """optimized/kernels/tuning.py's override (what bench/gpu.py's sweeps use) sets a knob in its one home, where the
    kernels' wrappers read it at each call, and restores it; an unknown knob is an error."""
    import importlib

    import pytest
    import kernel_env  # noqa: F401  (the interpreter switch, before optimized.kernels)
    tuning = importlib.import_module("optimized.kernels.tuning")
    linear, rope_cache = (importlib.import_module(f"optimized.kernels.{m}") for m in ("linear", "rope_cache"))
    before = tuning.LINEAR_CONFIG
    cfg = dict(before, BLOCK_O=16)
    with tuning.override(LINEAR_CONFIG=cfg):
        assert tuning.LINEAR_CONFIG is cfg and rope_cache._pairs_a_program(32) == 8 and linear.block_o(10 ** 6) == 16
    assert tuning.LINEAR_CONFIG is before and rope_cache._pairs_a_program(32) == 4
    with pytest.raises(KeyError, match="LINEAR_CONFG"):
        with tuning.override(LINEAR_CONFG=cfg):
            pass


def test_bench_gpu_attention_sweep_runs_each_tile(tmp_path):
    """`bench/gpu.py --attn-sweep` times the attention prefill with each ATTN_SWEEP tile (on CPU fp32 keeps its own
    tile: the sweep only runs), a full layer and a windowed one each, none failed; tuning.PREFILL_TILE restored."""
    out = tmp_path / "attn.json"
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--skip", "moe,attention,engine", "--attn-sweep",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    assert [r["what"] for r in rows] == ["attention sweep"] * 2 * len(gpu.ATTN_SWEEP)
    assert [r["setting"] for r in rows[:2]] == ["20 tokens, full layer", "20 tokens, window 8"]
    for r in rows:
        assert "FAILED" not in r["note"] and r["ms"] > 0 and math.isfinite(r["fraction"]) and "tile" in r["note"], r
    import importlib
    tuning = importlib.import_module("optimized.kernels.tuning")
    with gpu.attention_tile(gpu.ATTN_SWEEP[1]) as tile:
        assert tuning.PREFILL_TILE is tile and tile["BLOCK_M"] == 64
    assert tuning.PREFILL_TILE["BLOCK_M"] == 128


def test_prefill_flops_counts_what_the_engine_must_compute():
    """bench/gpu.py's prefill floor, summed here layer by layer with the visible (query, key) pairs counted one by
    one: every layer's qkv for all tokens; the rest of each layer for all tokens but in the last layer, which
    serves the last token alone; that token's unembedding."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    c = gpu.SMOKE
    C, I, H, D, L = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.head_dim, c.num_hidden_layers
    for T in (1, 5, 16):
        want = 2 * C * c.vocab_size
        for n in range(L):
            W = c.window_of_layer(n)
            queries = range(T) if n < L - 1 else [T - 1]
            pairs = sum(1 for t in queries for s in range(t + 1) if W is None or t - s < W)
            want += 2 * C * c.qkv_dim * T + 2 * len(queries) * (H * D * C + C * c.num_experts
                                                              + c.experts_per_token * 3 * I * C)
            want += 4 * H * D * pairs
        assert gpu.prefill_flops(c, T) == want, (T, gpu.prefill_flops(c, T), want)


def test_device_check_asks_only_for_backends_the_bench_has():
    """Each engine backend bench/device_check.sh names (--backends) is one bench/gpu.py runs: a misspelt A/B variant
    would only show on a lent GPU, as a stage that measured nothing."""
    import importlib.util
    import re
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    named = [b for group in re.findall(r"--backends ([\w,-]+)", (ROOT / "bench" / "device_check.sh").read_text())
             for b in group.split(",")]
    assert "triton-pdl-noprefetch" in named and len(named) >= 6, named
    for b in named:
        base, _, variant = b.partition("-")
        assert base in ("triton", "torch") and (variant in gpu.VARIANTS if base == "triton" else not variant), b
