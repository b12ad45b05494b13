"""`--impl http:URL` (conformance/impls/http.py): the kit certifies an OpenAI-compatible server by its prompt
log-probabilities, through the official openai client, against a real server the test starts on loopback:
`python -m optimized serve` on the bundled tiny checkpoint (the golden case `tiny` is that model).

- the honest server (float32) passes logits/tiny and greedy/tiny, judged by top-20 log-probabilities;
- a server that computes a different model (the same command on another checkpoint) fails, named as such;
- a server that cannot be reached, or that names tokens by text, stops the run or fails in one line.
Each server is a subprocess, bounded (60 s to start, the kit's requests 120 s), always stopped.
"""
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai", reason="the openai client (test extra) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from test_conformance_diagnosis import run_kit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CKPTS = REPO / "golden" / "data" / "checkpoints"
TINY_CHECKS = ["conformance/test_model.py::test_logits[tiny]", "conformance/test_model.py::test_greedy[tiny]"]


@contextlib.contextmanager
def serving(checkpoint: Path, dtype="fp32"):
    proc = subprocess.Popen([sys.executable, "-m", "optimized", "serve", "--checkpoint", str(checkpoint),
                             "--dtype", dtype, "--port", "0", "--context", "256"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "... at http://127.0.0.1:PORT/v1" once it listens
        m = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_honest_server_passes_by_its_logprobs(tmp_path, monkeypatch):
    with serving(CKPTS / "tiny") as url:
        rc, cert = run_kit(f"http:{url}", TINY_CHECKS, tmp_path, monkeypatch, dtype="float32")
    assert rc == pytest.ExitCode.OK, [c["message"] for c in cert["checks"] if c["status"] == "fail"]
    assert cert["implementation"]["capabilities"] == ["top_logprobs"]
    measures = {m["check"]: m for c in cert["checks"] for m in c["measures"]}
    assert measures["logits/tiny.logprob"]["measured"] < measures["logits/tiny.logprob"]["bound"]
    assert measures["logits/tiny.argmax"]["compared"] > 0


def test_server_of_another_model_fails(tmp_path, monkeypatch):
    """The same server on a checkpoint of tiny's shapes with other random weights: the kit must not be fooled."""
    from reference.checkpoint import Checkpoint
    from reference.writer import write_checkpoint
    other = write_checkpoint(tmp_path / "other", Checkpoint(CKPTS / "tiny").config, seed=99)
    with serving(other) as url:
        rc, cert = run_kit(f"http:{url}", TINY_CHECKS[:1], tmp_path / "cert", monkeypatch, dtype="float32")
    assert rc == pytest.ExitCode.TESTS_FAILED
    (msg,) = [c["message"] for c in cert["checks"] if c["status"] == "fail"]
    assert "logits/tiny (top-20 log-probabilities): " in msg and "not among the port's top 20" in msg, msg


def test_unreachable_server_stops_in_one_line():
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance/test_model.py", "--impl",
                          "http:http://127.0.0.1:9/v1", "-q", "-p", "no:cacheprovider"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("ERROR: conformance:")]
    assert run.returncode == 4 and len(errors) == 1 and "GET http://127.0.0.1:9/v1/models failed" in errors[0], \
        run.stdout + run.stderr


def test_tokens_named_by_text_are_refused():
    from conformance.impls.http import HttpError, token_id
    assert token_id("token_id:200006") == 200006
    with pytest.raises(HttpError, match="return_tokens_as_token_ids"):
        token_id("Hello")
    assert json.dumps  # the module is importable without a server


def test_server_certificate_verifies_and_says_how_it_was_judged(tmp_path, monkeypatch):
    from conformance import certificate
    with serving(CKPTS / "tiny") as url:
        rc, cert = run_kit(f"http:{url}", ["conformance/"], tmp_path, monkeypatch, dtype="float32")
    fails = [c["check"] for c in cert["checks"] if c["status"] == "fail"]
    # the server serves tiny only: the other golden cases' checks fail (token ids beyond its vocabulary, or
    # another model's logprobs), tiny's pass, and the certificate of that run is consistent
    assert not any("[tiny]" in f for f in fails), fails
    report = certificate.examine(tmp_path)
    assert report.problems == [], report.problems
    assert any("top-k log-probabilities" in n for n in report.notes), report.notes
