"""The kit cannot hang or be fooled: misbehaving exec: ports (tiny scripts, one per mode) end in bounded time with
a message naming what happened, and the checks after the misbehaviour still run; an --impl, exec command or
--golden folder that cannot be used stops the session with one clear line. Each run is a subprocess with a hard
timeout, so a kit that hangs fails the test instead of hanging the suite."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOGITS = ["conformance/test_model.py::test_logits", "-k", "tiny or gqa"]  # 4 checks, one logits request each

# a port answering with the reference (conformance/examples/exec_port.py), logits only; MODE misbehaves
PORT = """\
import json, os, sys, time
from conformance.examples.exec_port import answer
open({pids!r}, "a").write(f"{{os.getpid()}}\\n")
HELLO = {{"name": "misbehaving test port", "dtype": "float32", "device": "cpu", "capabilities": ["logits"]}}

def reply(req):
    return json.dumps({{"id": req["id"], "result": HELLO if req["op"] == "hello" else answer(req)}})

def once():  # True the first time across restarts of the port: it misbehaves once, then behaves
    if os.path.exists({flag!r}):
        return False
    open({flag!r}, "w").close()
    return True

for line in sys.stdin:
    req = json.loads(line)
    logits = req["op"] == "logits"
{mode}
"""
ANSWER = "    print(reply(req), flush=True)"
MODES = {
    "hello_hangs": "    print('warming up', file=sys.stderr, flush=True); time.sleep(600)",
    "logits_hangs": "    if logits:\n        print('stuck in logits', file=sys.stderr, flush=True); time.sleep(600)\n"
                    + ANSWER,
    "logits_hangs_once": "    if logits and once():\n        time.sleep(600)\n" + ANSWER,
    "half_line_once": "    if logits and once():\n"
                      "        sys.stdout.write(reply(req)[:15]); sys.stdout.flush(); time.sleep(600)\n" + ANSWER,
    "log_every": "    print('loading weights...', flush=True)\n" + ANSWER,
    "log_once": "    if logits and once():\n        print('stray log line', flush=True)\n" + ANSWER,
    "twice": ANSWER + "\n" + ANSWER,
    "list": "    print(json.dumps([1, 2, 3]) if logits else reply(req), flush=True)",
    "exits_once": "    if logits and once():\n"
                  "        print('boom: out of memory', file=sys.stderr, flush=True); sys.exit(3)\n" + ANSWER,
}


def port(tmp_path, mode: str) -> str:
    script = tmp_path / f"{mode}.py"
    script.write_text(PORT.format(pids=str(tmp_path / "pids"), flag=str(tmp_path / "flag"), mode=MODES[mode]))
    return f"exec:{sys.executable} {script}"


def run_kit(tmp_path, impl: str, *extra: str, select=LOGITS, timeout=120):
    cert = tmp_path / "cert"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", *select, "--impl", impl, "--exec-timeout", "3", "-q",
                        "-p", "no:cacheprovider", "--certificate", str(cert), *extra], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    data = json.loads((cert / "certificate.json").read_text()) if (cert / "certificate.json").is_file() else {}
    return p, data, time.monotonic() - t0


def by_case(cert) -> list:
    """[(status, message)] of the logits checks, in the order they ran."""
    assert len(cert["checks"]) == 4, cert
    return [(c["status"], c["message"]) for c in cert["checks"]]


def assert_ports_stopped(tmp_path):
    for pid in map(int, (tmp_path / "pids").read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_port_that_never_answers_hello_stops_the_session(tmp_path):
    p, cert, took = run_kit(tmp_path, port(tmp_path, "hello_hangs"), "--exec-start-timeout", "2")
    out = p.stdout + p.stderr
    assert p.returncode == pytest.ExitCode.USAGE_ERROR and not cert, out
    assert "no answer to 'hello' (request 1) within 2 s" in out and "warming up" in out, out  # the stderr tail
    assert len(out.splitlines()) < 30 and took < 30, (took, out)
    assert_ports_stopped(tmp_path)


def test_port_that_never_answers_logits_times_out_and_gives_up(tmp_path):
    """Every logits request hangs: the first two time out (killed, restarted in between); the kit then gives up on
    the port and fails the rest at once with the same reason, so the run takes about two timeouts, not five."""
    p, cert, took = run_kit(tmp_path, port(tmp_path, "logits_hangs"))
    got = by_case(cert)
    assert p.returncode == pytest.ExitCode.TESTS_FAILED and all(s == "fail" for s, _ in got), got
    first = got[0][1]
    assert "no answer to 'logits'" in first and "within 3 s (--exec-timeout)" in first, first
    assert "stuck in logits" in first, first  # the port's stderr tail
    assert all("no answer to 'logits'" in m for _, m in got), got
    assert "gave up" in got[-1][1], got
    assert took < 40, took
    assert_ports_stopped(tmp_path)


def first_fails_rest_pass(tmp_path, mode: str, *fragments: str):
    """The kit on a port that misbehaves once: the first check fails with every fragment in its message, the
    checks after it pass (the port restarted, or the ids kept in step). Returns run_kit's (process, cert, s)."""
    p, cert, took = run_kit(tmp_path, port(tmp_path, mode))
    got = by_case(cert)
    status, message = got[0]
    assert status == "fail" and all(f in message for f in fragments), message
    assert all(s == "pass" for s, _ in got[1:]), got
    return p, cert, took


def test_port_that_hangs_once_is_restarted_and_later_checks_pass(tmp_path):
    p, cert, took = first_fails_rest_pass(tmp_path, "logits_hangs_once", "no answer to 'logits'")
    assert took < 40, took
    assert_ports_stopped(tmp_path)


def test_half_a_line_then_a_stall_names_what_came(tmp_path):
    p, cert, took = first_fails_rest_pass(tmp_path, "half_line_once", "no answer to 'logits'", "'{\"id\": 2, \"resu'")
    assert took < 40, took


def test_log_lines_on_stdout_before_hello_stop_the_session_naming_the_line(tmp_path):
    p, cert, took = run_kit(tmp_path, port(tmp_path, "log_every"))
    out = p.stdout + p.stderr
    assert p.returncode == pytest.ExitCode.USAGE_ERROR and "'loading weights...'" in out and "stderr" in out, out
    assert len(out.splitlines()) < 30 and took < 30, (took, out)


def test_one_stray_line_fails_one_check_only(tmp_path):
    p, cert, took = first_fails_rest_pass(tmp_path, "log_once", "'stray log line'", "not a JSON object")
    assert "response id" not in json.dumps(cert), cert  # the late answer is skipped, the ids stay in step


def test_port_that_answers_twice_is_named_and_stays_in_step(tmp_path):
    p, cert, took = run_kit(tmp_path, port(tmp_path, "twice"))
    got = by_case(cert)
    messages = [m for s, m in got if s == "fail"]
    assert messages and all("answered request" in m and "twice" in m for m in messages), got
    assert any(s == "pass" for s, _ in got), got  # no cascade: the kit reads the right answers
    assert took < 40, took


def test_port_that_answers_a_json_list(tmp_path):
    p, cert, took = run_kit(tmp_path, port(tmp_path, "list"))
    got = by_case(cert)
    assert all(s == "fail" and "'[1, 2, 3]'" in m and "not a JSON object" in m for s, m in got), got
    assert "AttributeError" not in json.dumps(cert)


def test_port_that_exits_names_its_code_and_stderr_and_is_restarted(tmp_path):
    first_fails_rest_pass(tmp_path, "exits_once", "exited with code 3", "boom: out of memory")


def run_abort(args: list[str], prelude: str = "") -> str:
    """The kit with args that cannot work: a non-zero exit, within seconds, in a few lines. Returns the output."""
    code = f"import sys, pytest\n{prelude}\nsys.exit(pytest.main(sys.argv[1:]))"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code, "conformance/", "-q", "-p", "no:cacheprovider", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode not in (0, 1), out  # not "tests failed": nothing was run
    assert len(out.splitlines()) < 30 and time.monotonic() - t0 < 30, out
    assert "Traceback" not in out, out
    return out


@pytest.mark.parametrize("impl, line", [
    ("nosuchpkg.port:factory", "conformance: --impl 'nosuchpkg.port:factory': cannot import 'nosuchpkg.port'"),
    ("exec:./no_such_port", "cannot start './no_such_port': no such file"),
    ("exec:no_such_command_xyz --flag", "cannot start 'no_such_command_xyz': not found on PATH"),
    ("exec:conformance/README.md", "cannot start 'conformance/README.md': not executable"),
])
def test_unusable_impl_stops_the_session_with_one_line(impl, line):
    assert line in run_abort(["--impl", impl])


def test_port_file_that_fails_to_import_is_one_line(tmp_path):
    bad = tmp_path / "bad_port.py"
    bad.write_text("import numpy\nraise RuntimeError('no GPU here')\n")
    out = run_abort(["--impl", f"{bad}:factory"])
    assert "importing it raised RuntimeError: no GPU here" in out, out


def test_golden_that_does_not_exist_or_has_no_manifest_is_one_line(tmp_path):
    out = run_abort(["--golden", str(tmp_path / "nonexistent")])
    assert f"--golden {tmp_path / 'nonexistent'}: no such folder" in out, out
    out = run_abort(["--golden", str(tmp_path)])
    assert "no manifest.json" in out, out


def test_transformers_without_accelerate_is_one_line():
    out = run_abort(["--impl", "transformers"], prelude="sys.modules['accelerate'] = None")
    assert "pip install accelerate" in out, out
