"""Third-party engines the kit certifies, each verdict pinned: mlx-lm (`--impl mlx`) and KerasHub
(`--impl keras-hub`). Like test_transformers_passes, each test runs the kit's model checks on the port and
expects exactly the checks that conformance/README.md records as failing to fail, and their messages to name the
cause (the first diverging stage, the known trap from the model-level diagnosis). A change in either library that
fixes or breaks something shows here as a changed verdict: update the README's section with it.

CI installs both (`pip install -e '.[mlx,keras-hub]'` and `pip install --no-deps keras-hub==0.32.0`); without
them these tests skip, saying what to install. A subset of the golden checkpoints keeps them to about two minutes
on two cores: the full run is `pytest conformance/test_model.py --impl mlx` (or keras-hub), README timings.
"""
import importlib.util

import pytest

from test_conformance import failures, run_kit

MODEL = "conformance/test_model.py"
CHECKS = ["test_logits", "test_greedy", "test_decode", "test_batch", "test_stages"]
RELEASED = "changes gpt-oss-20b/120b as released"
CONFIG_ONLY = "only checkpoints whose config differs from the release's"


def _need(*modules, pip):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: {pip}")


def _by_check(cert) -> dict:
    return {c["check"].split("::", 1)[1]: c for c in cert["checks"]}


def _expect(cert, failing: set[str], passing: set[str]):
    """Exactly `failing` fail and `passing` pass, nothing else ran; the failing checks' records, by name."""
    by = _by_check(cert)
    assert set(by) == failing | passing, sorted(by)
    got_fail = {n for n, c in by.items() if c["status"] == "fail"}
    assert got_fail == failing, (sorted(got_fail ^ failing), failures(cert))
    assert all(by[n]["status"] == "pass" for n in passing)
    return {n: by[n]["message"] for n in failing}


def _stage_and_trap(msgs: dict):
    """Every failure but greedy's names the first diverging stage (greedy has no golden stages); yields the
    messages that carry a model-level diagnosis (every check but stages, which compares stages, not logits)."""
    for name, m in msgs.items():
        if not name.startswith("test_greedy"):
            assert "first diverging stage: block.0.attn" in m, (name, m)
        if not name.startswith("test_stages"):
            yield name, m


def _each(checks, case):
    return {f"{c}[{case}]" for c in checks}


def test_mlx_verdict(tmp_path, monkeypatch):
    """mlx-lm 0.32.2: float32 fails every YaRN checkpoint from layer 0's attention, its YaRN ramp bounds rounded
    (rope_utils.py floors and ceils them: changes the released models); on gqa2-top2 (swiglu_limit 3) its SwiGLU
    limit fixed at 7 as well. gqa1-top1-odd (no YaRN) passes every check, decode and batch included. bfloat16:
    the rounding is below bf16 precision, so only `traps` (swiglu_limit 1) fails, named swiglu_limit_fixed."""
    _need("mlx_lm", "mlx", pip="pip install -e '.[mlx]'")
    rc, cert = run_kit([MODEL, "-k", "tiny or gqa1-top1-odd or (test_logits and gqa2-top2)", "--impl", "mlx"],
                       tmp_path / "fp32", monkeypatch)
    ident = cert["implementation"]
    assert ident["dtype"] == "float32" and "mlx-lm 0.32.2" in ident["name"], ident
    assert {"decode_logits", "batch_logits", "intermediates"} <= set(ident["capabilities"])
    msgs = _expect(cert, _each(CHECKS, "tiny") | {"test_logits[gqa2-top2]"}, _each(CHECKS, "gqa1-top1-odd"))
    for name, m in _stage_and_trap(msgs):
        assert f"yarn_rounded: {RELEASED}" in m and "the logits match gpt-oss" in m, (name, m)
    assert "swiglu_limit_fixed" in msgs["test_logits[gqa2-top2]"]  # named, or as the twin of swiglu_no_clamp

    rc, cert = run_kit([f"{MODEL}::test_logits", "--impl", "mlx", "--dtype", "bfloat16"], tmp_path / "bf16",
                       monkeypatch)
    assert cert["implementation"]["dtype"] == "bfloat16"
    cases = {c["check"].split("[")[1].rstrip("]") for c in cert["checks"]}
    msgs = _expect(cert, {"test_logits[traps]"}, {f"test_logits[{c}]" for c in cases - {"traps"}})
    m = msgs["test_logits[traps]"]
    assert f"swiglu_limit_fixed: {CONFIG_ONLY}" in m and "the logits match gpt-oss" in m, m
    assert "first diverging stage: block.0.mlp" in m, m


def test_keras_hub_verdict(tmp_path, monkeypatch):
    """KerasHub 0.32.0 (torch backend), float32: every check of `tiny` fails from layer 0's attention, named as
    the sliding window on the odd layers + a window of W+1 keys (both change the released models);
    gqa2-top3-wide, whose prompt is shorter than its window, passes every check, decode and batch included.
    bfloat16: the same window traps fail `tiny`."""
    _need("keras", "keras_hub", pip="pip install -e '.[keras-hub]' && pip install --no-deps keras-hub==0.32.0")
    rc, cert = run_kit([MODEL, "-k", "tiny or gqa2-top3-wide", "--impl", "keras-hub"], tmp_path / "fp32",
                       monkeypatch)
    ident = cert["implementation"]
    assert ident["dtype"] == "float32" and "KerasHub 0.32.0" in ident["name"], ident
    assert {"decode_logits", "batch_logits", "intermediates"} <= set(ident["capabilities"])
    msgs = _expect(cert, _each(CHECKS, "tiny"), _each(CHECKS, "gqa2-top3-wide"))
    for name, m in _stage_and_trap(msgs):
        assert f"window_odd_layers: {RELEASED}" in m and f"window_plus_one: {RELEASED}" in m, (name, m)
        assert "the logits match gpt-oss" in m, (name, m)

    rc, cert = run_kit([f"{MODEL}::test_logits[tiny]", "--impl", "keras-hub", "--dtype", "bfloat16"],
                       tmp_path / "bf16", monkeypatch)
    assert cert["implementation"]["dtype"] == "bfloat16"
    m = _expect(cert, {"test_logits[tiny]"}, set())["test_logits[tiny]"]
    assert "window_odd_layers" in m and "window_plus_one" in m, m
