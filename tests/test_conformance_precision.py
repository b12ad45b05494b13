"""Precision classes (conformance/SPEC.md section 2): a port whose kernels round activations at the expert matmuls
(llama.cpp's Q8_0, MXFP8) is bounded by a baseline that rounds the same way.

- golden/activations.py's roundings are the formats they name (ggml's quantize_row_q8_0_ref, written out here in
  numpy; E4M3 values with a power-of-two block scale);
- an honest bf16 port of each class (tests/wrong_ports/bf16.py: honest_int8, honest_fp8; logits only) passes it,
  fp8 rounding fails the int8 class, and a bug inside the int8 class is failed and named;
- a class certificate verifies; a class without a baseline stops the run in one line.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conformance import certificate, spec
from golden import activations
from test_conformance_diagnosis import BF16_FILE, TRAPS_LOGITS, run_kit

REPO = Path(__file__).resolve().parent.parent
LOGITS = "conformance/test_model.py::test_logits"


def q8_0_ggml(x: np.ndarray) -> np.ndarray:
    """ggml-quants.c quantize_row_q8_0_ref then dequantize_row_q8_0, in float32 as C does it."""
    out = np.empty_like(x, dtype=np.float32)
    for i in range(0, x.size, 32):
        b = x[i:i + 32].astype(np.float32)
        amax = np.float32(np.max(np.abs(b)))
        d = amax / np.float32(127)
        inv = np.float32(1) / d if d else np.float32(0)
        q = np.array([np.copysign(np.floor(abs(v) + 0.5), v) for v in b * inv], dtype=np.float32)  # roundf
        out[i:i + 32] = q * np.float32(np.float16(d))
    return out


def test_int8_is_ggml_q8_0():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(32 * 7) * 10.0 ** rng.integers(-3, 3, 32 * 7), np.zeros(32)])
    got = activations.round_activations(torch.from_numpy(x.astype(np.float32))[None], "int8")[0].numpy()
    assert np.array_equal(got, q8_0_ggml(x.astype(np.float32)))


def test_fp8_is_e4m3_times_a_power_of_two():
    rng = np.random.default_rng(1)
    x = torch.from_numpy((rng.standard_normal((4, 96)) * 10.0 ** rng.integers(-4, 4, (4, 96))).astype(np.float32))
    y = activations.round_activations(x, "fp8")
    blocks, yb = x.reshape(4, 3, 32), y.reshape(4, 3, 32)
    scale = torch.exp2(torch.floor(torch.log2(blocks.abs().amax(-1, keepdim=True))) - activations.E4M3_EMAX)
    e = yb / scale
    assert torch.equal(e, e.to(torch.float8_e4m3fn).float()), "elements are not E4M3 values"
    assert e.abs().max() <= activations.E4M3_MAX
    assert torch.equal(activations.round_activations(y, "fp8"), y), "rounding twice moved values"
    # 3 mantissa bits, and the MX spec's scale saturates a block's largest values at 448 of up to 511: 1/8
    assert ((yb - blocks).abs() <= blocks.abs().amax(-1, keepdim=True) / 8).all()


@pytest.mark.parametrize("port,cls,selection", [("honest_int8", "bfloat16+int8", "conformance/"),
                                               ("honest_fp8", "bfloat16+fp8", LOGITS)])
def test_honest_port_of_a_class_passes_it(port, cls, selection, tmp_path, monkeypatch):
    rc, cert = run_kit(f"{BF16_FILE}:{port}", [selection], tmp_path, monkeypatch)  # the class: the port's attribute
    assert cert["implementation"]["dtype"] == cls
    assert rc == pytest.ExitCode.OK, [c["message"] for c in cert["checks"] if c["status"] == "fail"]
    worst = max(m["measured"] / m["bound"] for c in cert["checks"] for m in c["measures"] if m.get("bound"))
    assert worst < 0.8, f"{port}: {worst:.2f} of its bound: too little headroom"
    if selection == "conformance/":  # a whole run's certificate verifies, its bounds recomputed for the class
        report = certificate.examine(tmp_path)
        assert report.problems == [] and report.dtype == cls, report.problems


def test_fp8_rounding_fails_the_int8_class(tmp_path, monkeypatch):
    rc, cert = run_kit(f"{BF16_FILE}:honest_fp8", [TRAPS_LOGITS], tmp_path, monkeypatch, dtype="bfloat16+int8")
    assert cert["implementation"]["dtype"] == "bfloat16+int8"
    assert rc == pytest.ExitCode.TESTS_FAILED


# inside the int8 class, bugs whose bf16 margin (SPEC.md section 4) is 2x or more stay failed and named
INT8_BUGS = ["swiglu_limit_fixed", "window_odd_layers", "sinks_ignored", "yarn_no_concentration", "rms_eps_1e-6"]


@pytest.mark.parametrize("bug", INT8_BUGS)
def test_bug_inside_the_int8_class_is_failed_and_named(bug, tmp_path, monkeypatch):
    rc, cert = run_kit(f"{BF16_FILE}:int8_{bug}", [TRAPS_LOGITS], tmp_path, monkeypatch)
    assert cert["implementation"]["dtype"] == "bfloat16+int8"
    assert rc == pytest.ExitCode.TESTS_FAILED, f"{bug}: passed inside the int8 class"
    message = "\n".join(c["message"] for c in cert["checks"] if c["status"] == "fail")
    assert "model-level diagnosis: the logits match gpt-oss with known trap" in message, message
    assert f"[{bug}:" in message or f"as {bug}" in message or f", {bug}" in message, message


@pytest.mark.parametrize("args,says", [
    (["--dtype", "float64", "--activations", "int8"], "no precision class float64+int8"),
    (["--dtype", "float32", "--activations", "fp8"], "no precision class float32+fp8"),
    (["--dtype", "bfloat16+fp8", "--activations", "int8"], "disagree"),
])
def test_a_class_without_baseline_stops_in_one_line(args, says):
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance/", "--impl", "reference", *args, "-q",
                          "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("ERROR: conformance:")]
    assert run.returncode == 4 and len(errors) == 1 and says in errors[0], run.stdout + run.stderr


def test_precision_class_names():
    assert spec.precision_class("bf16", "int8") == "bfloat16+int8"
    assert spec.precision_class("bfloat16+int8") == "bfloat16+int8"
    assert spec.precision_class("float32") == "float32"
    assert spec.base_dtype("bfloat16+fp8") == "bfloat16"
    with pytest.raises(ValueError, match="unknown activation rounding"):
        spec.precision_class("bfloat16", "int4")
    case = {"baseline.bfloat16.logits": 0.1}
    with pytest.raises(KeyError, match="no baseline.bfloat16\\+int8.logits"):
        spec.case_bound(case, "bfloat16+int8", "logits")
    assert json.dumps(spec.KNOWN_CLASSES)  # certificates record one of these
