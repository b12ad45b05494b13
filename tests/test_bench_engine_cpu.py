"""bench/engine_cpu.py's bookkeeping (no timing): the weight bytes each row's decode step reads, the CPU line, the
row names; bench/cpu_kernels.py's cases run. The measurements themselves are BENCHMARKS.md's, never asserted."""
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from optimized import mxfp4_cpu

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_engine_cpu", ROOT / "bench" / "engine_cpu.py")
engine_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(engine_cpu)


@pytest.mark.parametrize("impl,mb", [("optimized-fp32", 106.0), ("optimized-bf16", 106.0), ("llamacpp-bf16", 106.0),
                                     ("llamacpp-f32", 181.9), ("llamacpp-q8_0", 70.4), ("transformers-fp32", 378.3),
                                     ("transformers-bf16", 189.1)])
def test_weight_bytes_per_token_mid(impl, mb):
    """The mid shape's bytes a token, as issue 22's table and the README's floor table give them: experts packed
    (17/32 bytes a weight) for the engine and llama.cpp, the dense matrices in each row's type."""
    assert round(engine_cpu.weight_bytes_per_token(engine_cpu.CONFIG, impl) / 1e6, 1) == mb
    assert engine_cpu.weight_bytes_per_token(engine_cpu.CONFIG, "reference") is None


def test_weight_bytes_per_token_20b():
    """gpt-oss-20b's real shapes: 3.71 GB a token (2.44 GB of bf16 non-expert weights + 1.27 GB of 4 routed MXFP4
    experts a layer), the same for the engine's two dtypes and llama.cpp's bf16 GGUF."""
    c = engine_cpu.SHAPES["20b"]
    got = {i: engine_cpu.weight_bytes_per_token(c, i) for i in ("optimized-fp32", "optimized-bf16", "llamacpp-bf16")}
    assert len(set(got.values())) == 1 and round(got["optimized-bf16"] / 1e9, 2) == 3.71


def test_cpu_line_and_rows():
    line = engine_cpu.cpu_line()
    assert line.startswith("CPU:") and ("has" in line or "unknown" in line)
    for shape, impls in engine_cpu.DEFAULT_IMPLS.items():
        assert shape in engine_cpu.SHAPES and set(impls) <= set(engine_cpu.IMPLS)


def test_cpu_kernels_bench_measures_each_case(monkeypatch):
    """bench/cpu_kernels.py's cases run the kernels they name and count the bytes a call reads."""
    if not mxfp4_cpu.available():
        pytest.skip(f"no C kernels: {mxfp4_cpu.unavailable_reason}")
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import cpu_kernels
    monkeypatch.setattr(cpu_kernels, "COLD_BYTES", 64 * 1024)
    for hot in (True, False):
        for int8 in (False, True):
            nbytes, (best, median) = cpu_kernels.experts_case(64, 32, hot, int8, runs=3)
            assert nbytes == 4 * (2 * 32 * 64 // 32 * 17) and 0 < best <= median
        nbytes, (best, median) = cpu_kernels.dense_case(8, 96, hot, runs=3)
        assert nbytes == 8 * 96 * 2 and 0 < best <= median
    c = cpu_kernels.SHAPES["mid"]
    small = dataclasses.replace(c, num_experts=4, experts_per_token=2, hidden_size=64, intermediate_size=32)
    for int8 in (False, True):
        macs, (best, median) = cpu_kernels.prefill_case(small, 5, int8, runs=3)
        assert macs == 5 * 2 * 3 * 64 * 32 and 0 < best <= median
