"""What the kit says of llama.cpp (`--impl llama.cpp`, llama-cpp-python 0.3.36's vendored llama.cpp, CPU), pinned:
the verdict recorded in conformance/README.md, check by check, with the traps the diagnosis names.

f32 GGUF (float32+int8: llama.cpp's CPU MXFP4 matmuls take Q8_0 activations): the logits of the five golden
checkpoints whose configs keep the release's SwiGLU limit and YaRN alpha/beta pass; `traps` fails and is named
(SwiGLU limit fixed at 7, YaRN beta fixed at 32); every stages/* check with YaRN fails at block.0.attn and is named
yarn_rounded (on `traps`: rounded + beta 32 + alpha 1); llama.cpp's tokenizer fails 3 of 28 vectors (special-token
names in plain text become specials; one pre-tokenizer split). bf16 GGUF (bfloat16+int8): only `traps` fails.
"""
import importlib.util

import pytest

from test_conformance_diagnosis import run_kit

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama-cpp-python not installed (pip install -e '.[llamacpp]', README)")

F32_FAILS = {"test_model.py::test_logits[traps]", "test_model.py::test_greedy[traps]",
             "test_model.py::test_decode[traps]", "test_model.py::test_batch[traps]",
             "test_model.py::test_stages[gqa2-top2]", "test_model.py::test_stages[gqa2-top3-wide]",
             "test_model.py::test_stages[mqa-long]", "test_model.py::test_stages[tiny]",
             "test_model.py::test_stages[traps]", "test_text.py::test_tokenizer"}
BF16_FAILS = {"test_model.py::test_logits[traps]", "test_model.py::test_greedy[traps]",
              "test_model.py::test_decode[traps]", "test_model.py::test_batch[traps]",
              "test_model.py::test_stages[traps]"}


def _fails(cert) -> dict:
    return {c["check"].split("conformance/")[-1]: c.get("message", "") for c in cert["checks"] if c["status"] == "fail"}


def test_llamacpp_f32_verdict(tmp_path, monkeypatch):
    rc, cert = run_kit("llama.cpp", ["conformance/"], tmp_path, monkeypatch, dtype="float32")
    assert cert["implementation"]["dtype"] == "float32+int8"
    fails = _fails(cert)
    assert set(fails) == F32_FAILS, sorted(fails)
    assert "[swiglu_limit_fixed:" in fails["test_model.py::test_logits[traps]"]
    for case in ("gqa2-top2", "gqa2-top3-wide", "mqa-long", "tiny"):
        msg = fails[f"test_model.py::test_stages[{case}]"]
        assert "first diverging stage: block.0.attn" in msg and "stage block.0.attn matches gpt-oss with known " \
            "trap YaRN ramp bounds rounded" in msg, msg
    msg = fails["test_model.py::test_stages[traps]"]
    assert all(f"[{t}:" in msg for t in ("yarn_rounded", "yarn_beta_fixed", "yarn_alpha_fixed")), msg
    assert "3 of 28 vectors differ" in fails["test_text.py::test_tokenizer"]
    passed = {c["check"].split("conformance/")[-1] for c in cert["checks"] if c["status"] == "pass"}
    assert {"test_model.py::test_logits[gqa2-top2]", "test_model.py::test_decode[tiny]",
            "test_model.py::test_batch[mqa-long]", "test_text.py::test_detokenize"} <= passed, sorted(passed)


def test_llamacpp_bf16_verdict(tmp_path, monkeypatch):
    rc, cert = run_kit("llama.cpp", ["conformance/test_model.py"], tmp_path, monkeypatch, dtype="bfloat16")
    assert cert["implementation"]["dtype"] == "bfloat16+int8"
    fails = _fails(cert)
    assert set(fails) == BF16_FAILS, sorted(fails)
    assert "[swiglu_limit_fixed:" in fails["test_model.py::test_logits[traps]"]
