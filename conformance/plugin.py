"""Finding the implementation under test: `--impl` names, the plugin protocol, the exec: bridge.

Protocol (conformance/README.md): a factory `factory(checkpoint_dir) -> impl`; `impl.logits(tokens)` is
required; everything in OPTIONAL is a capability a port may have. A missing capability makes its checks
NOT_SUPPORTED (a pytest skip whose reason starts with "not supported:"), never passed.
"""
import base64
import importlib
import importlib.util
import json
import collections
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

OPTIONAL = ["top_logprobs", "decode_logits", "batch_logits", "intermediates", "op_mxfp4_decode", "op_rms_norm", "op_swiglu",
            "op_route", "op_rope_cos_sin", "op_attention", "tokenize", "tokenize_special", "detokenize", "render",
            "parse", "parse_stream"]
BUILTIN = {"reference": "conformance.impls.reference:factory",
           "transformers": "conformance.impls.transformers:factory",
           "optimized": "optimized.adapter:factory",
           "mlx": "conformance.impls.mlx:factory",
           "keras-hub": "conformance.impls.keras_hub:factory",
           "llama.cpp": "conformance.impls.llamacpp:factory"}
BF16_FACTORY = {"optimized": "optimized.adapter:factory_bf16",
                "transformers": "conformance.impls.transformers:factory_bf16",
                "mlx": "conformance.impls.mlx:factory_bf16",
                "keras-hub": "conformance.impls.keras_hub:factory_bf16",
                "llama.cpp": "conformance.impls.llamacpp:factory_bf16"}
CUDA_FACTORY = {"optimized": ("optimized.adapter:factory_cuda", "optimized.adapter:factory_cuda_bf16")}  # fp32, bf16


class ImplError(RuntimeError):
    """The --impl could not be found or loaded; the message says what to fix."""


def _load_attr(spec: str):
    if ":" not in spec:
        raise ImplError(f"--impl {spec!r}: expected {', '.join(BUILTIN)}, package.module:factory, "
                        f"path/to/file.py:factory or exec:COMMAND")
    mod_name, attr = spec.rsplit(":", 1)
    if mod_name.endswith(".py") and not Path(mod_name).is_file():
        raise ImplError(f"--impl {spec!r}: no file {Path(mod_name).resolve()}")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name).resolve()
            s = importlib.util.spec_from_file_location(f"_conformance_impl_{path.stem}", path)
            module = importlib.util.module_from_spec(s)
            sys.modules[s.name] = module
            s.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ImplError(f"--impl {spec!r}: cannot import {mod_name!r} ({e})") from None
    except Exception as e:  # noqa: BLE001 - the port's own import error, in one line
        raise ImplError(f"--impl {spec!r}: importing it raised {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        raise ImplError(f"--impl {spec!r}: module {mod_name!r} has no attribute {attr!r}")
    preflight = getattr(module, "preflight", None)  # optional: the port checks what it needs (a package...)
    if callable(preflight):
        try:
            preflight()
        except Exception as e:  # noqa: BLE001
            raise ImplError(f"--impl {spec!r}: {e}") from None
    return getattr(module, attr)


def resolve(name: str, dtype: str | None, device: str | None = None):
    """--impl (and --dtype, --device) -> (factory, identity string)."""
    if device == "cuda" and name not in CUDA_FACTORY:
        raise ImplError(f"--device cuda applies to the built-in {sorted(CUDA_FACTORY)} only; --impl {name!r} "
                        f"chooses its device in its own factory")
    if name.startswith("http:") or name.startswith("https:"):
        from conformance.impls.http import HttpFactory  # the openai client, imported only here
        return HttpFactory(name[len("http:"):] if name.startswith("http:http") else name), name
    if name.startswith("exec:"):
        command = name[len("exec:"):].strip()
        if not command:
            raise ImplError("--impl exec: needs a command, e.g. exec:'python my_port.py'")
        return ExecFactory(command), name
    spec = name
    if name in BUILTIN:
        spec = BUILTIN[name]
        if dtype in ("bfloat16", "bf16") and name in BF16_FACTORY:
            spec = BF16_FACTORY[name]
        if device == "cuda":
            spec = CUDA_FACTORY[name][dtype in ("bfloat16", "bf16")]
    factory = _load_attr(spec)
    if not callable(factory):
        raise ImplError(f"--impl {name!r}: {spec} is not callable")
    return factory, spec


def capabilities(impl) -> list[str]:
    return [c for c in OPTIONAL if callable(getattr(impl, c, None))]


def to_numpy(x, what: str) -> np.ndarray:
    """array-like (numpy, torch on any device, nested lists) -> float64 numpy, or a clear error."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu")
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the port's bug, named here
        raise TypeError(f"{what}: returned {type(x).__name__}, not an array ({e})") from None
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{what}: returned an array of dtype {a.dtype}, expected numbers")
    return a


# -- exec: a port in any language, over stdin/stdout -----------------------------------------------------
def encode_array(a) -> dict:
    a = np.asarray(a)
    kind = {"f": "<f8", "i": "<i8", "u": "<i8", "b": "|u1"}[a.dtype.kind]
    a = np.ascontiguousarray(a.astype(kind))
    return {"shape": list(a.shape), "dtype": kind, "data_b64": base64.b64encode(a.tobytes()).decode()}


def decode_array(d) -> np.ndarray:
    if not isinstance(d, dict) or not {"shape", "dtype", "data_b64"} <= set(d):
        raise ValueError(f"expected an array object {{shape, dtype, data_b64}}, got {str(d)[:200]}")
    if d["dtype"] not in ("<f4", "<f8", "<i4", "<i8", "|u1"):
        raise ValueError(f"array dtype {d['dtype']!r}: use <f4, <f8, <i4, <i8 or |u1")
    raw = base64.b64decode(d["data_b64"])
    a = np.frombuffer(raw, dtype=np.dtype(d["dtype"]))
    if a.size != int(np.prod(d["shape"])):
        raise ValueError(f"array of shape {d['shape']} holds {a.size} values")
    return a.reshape(d["shape"])


def _wire(x):
    if isinstance(x, np.ndarray):
        return encode_array(x)
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, np.ndarray)):
        return [_wire(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _unwire(x):
    if isinstance(x, dict) and "data_b64" in x:
        return decode_array(x)
    if isinstance(x, list):
        return [_unwire(v) for v in x]
    return x


GIVE_UP = 2  # timeouts or exits in a row (no answer between) after which every later request fails at once
TAIL = 20  # lines of the port's stderr quoted in a failure


def _argv(command: str) -> list[str]:
    """COMMAND split like a shell would, after checking that its program exists and can be run."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ImplError(f"exec:{command}: cannot split the command ({e})") from None
    exe = argv[0]
    if os.sep in exe:
        if not Path(exe).is_file():
            raise ImplError(f"exec:{command}: cannot start {exe!r}: no such file ({Path(exe).resolve()})")
        if not os.access(exe, os.X_OK):
            raise ImplError(f"exec:{command}: cannot start {exe!r}: not executable (chmod +x, or name its "
                            f"interpreter: exec:python {exe})")
    elif shutil.which(exe) is None:
        raise ImplError(f"exec:{command}: cannot start {exe!r}: not found on PATH")
    return argv


def _pump_stdin(stream, requests: queue.Queue):
    for text in iter(requests.get, None):
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # the port exited or was stopped: the stdout reader reports it
            return


def _pump_stdout(stream, lines: queue.Queue):
    for line in stream:  # a partial last line comes too, without its newline, once the port closes stdout
        lines.put(line)
    lines.put(None)


def _pump_stderr(stream, tail: collections.deque):
    for line in iter(lambda: stream.readline(4096), ""):
        tail.append(line.rstrip("\n"))


class ExecProcess:
    """The port's child process: one JSON request per line on its stdin, one JSON response per line on its stdout.

    Every answer is awaited with a deadline (a reader thread fills a queue; the kit never blocks on a read or a
    write). Framing is strict: a line that is not the answer to the current request fails that request, naming
    the line, and the ids stay in step: a late answer to an earlier failed request is skipped. A port that times
    out or exits is stopped and started again by the next request, until it fails so GIVE_UP times in a row; then
    every request fails at once with that reason. Failures quote the last TAIL lines of the port's stderr."""

    def __init__(self, command: str, timeout: float = 600, start_timeout: float = 60):
        self.command, self.timeout, self.start_timeout = command, timeout, start_timeout
        self.argv = _argv(command)
        self.lock = threading.Lock()
        self.next_id = 0
        self.answered: set[int] = set()  # a second answer to one of these is the port's error
        self.fatal = 0  # timeouts and exits in a row
        self.gave_up = None
        self.proc, self.hello = None, None
        self.hello = self._start()

    def _start(self) -> dict:
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                         start_new_session=True, env=os.environ.copy())
        except OSError as e:
            raise ImplError(f"exec:{self.command}: cannot start {self.argv[0]!r} ({e})") from None
        self.requests, self.lines, self.stderr = queue.Queue(), queue.Queue(), collections.deque(maxlen=TAIL)
        self.pumps = [threading.Thread(target=f, args=a, daemon=True) for f, a in [
            (_pump_stdout, (self.proc.stdout, self.lines)), (_pump_stderr, (self.proc.stderr, self.stderr)),
            (_pump_stdin, (self.proc.stdin, self.requests))]]
        for t in self.pumps:
            t.start()
        try:
            hello = self._request({"op": "hello"}, self.start_timeout, "--exec-start-timeout")
            if not isinstance(hello, dict) or not isinstance(hello.get("capabilities"), list):
                raise ImplError(self._say(f"the hello answer must be an object with a 'capabilities' list, got "
                                          f"{str(hello)[:200]!r}"))
            unknown = [c for c in hello["capabilities"] if c != "logits" and c not in OPTIONAL]
            if unknown:
                raise ImplError(self._say(f"hello declares unknown capabilities {unknown} (known: logits, "
                                          f"{OPTIONAL})"))
        except BaseException:
            self._stop()
            raise
        return hello

    def call(self, request: dict):
        with self.lock:
            if self.gave_up:
                raise ImplError(self.gave_up)
            if self.proc is None:  # stopped after a timeout or an exit: start it again
                self._start()
            return _unwire(self._request(request, self.timeout, "--exec-timeout"))

    def _request(self, request: dict, timeout: float, option: str):
        self.next_id += 1
        rid, op = self.next_id, request["op"]
        self.requests.put(json.dumps({"id": rid, **request}) + "\n")
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._stop()
                partial = [x for x in self._drain() if x]
                came = f"; it had written part of a line: {''.join(partial)[:200]!r}" if partial else ""
                self._fatal(f"no answer to {op!r} (request {rid}) within {timeout:g} s ({option}); the port was "
                            f"stopped{came}")
            if line is None:
                code = self._exit_code()
                self._fatal(f"the port exited with code {code} before answering {op!r} (request {rid})")
            try:
                resp = json.loads(line)
            except json.JSONDecodeError:
                resp = None
            got = resp.get("id") if isinstance(resp, dict) else None
            if isinstance(got, int) and not isinstance(got, bool) and got < rid and got not in self.answered:
                continue  # the late answer to a request that already failed
            if not isinstance(resp, dict):
                raise ImplError(self._say(f"wrote {line.strip()[:200]!r} on stdout while {op!r} (request {rid}) "
                                          f"waited for its answer: not a JSON object; print only answers on stdout, "
                                          f"one per line (logs go to stderr)"))
            if got in self.answered:
                raise ImplError(self._say(f"answered request {got} twice (the second answer came while waiting "
                                          f"for request {rid}, {op!r}): answer each request once"))
            if got != rid:
                raise ImplError(self._say(f"answered {op!r} (request {rid}) with id {got!r}: {line.strip()[:200]!r}"))
            self.answered.add(rid)
            if op != "hello":  # a restart's hello is no sign that the port works again
                self.fatal = 0
            if "error" in resp:
                raise RuntimeError(f"exec port error on {op!r}: {resp['error']}")
            return resp.get("result")

    def _fatal(self, what: str):
        """A timeout or an exit: the port is stopped; after GIVE_UP in a row, every later request fails at once."""
        self._stop()
        self.fatal += 1
        if self.fatal >= GIVE_UP:
            self.gave_up = self._say(f"gave up on the port after {self.fatal} failures in a row; the last: {what}")
            raise ImplError(self.gave_up)
        raise ImplError(self._say(what + ("; the next check starts it again" if self.hello else "")))

    def _say(self, what: str) -> str:
        self.pumps[1].join(0.05 if self.proc is not None else 2)  # what the port wrote to stderr before it failed
        tail = "".join(f"\n    {x}" for x in self.stderr)
        return f"exec:{self.command}: {what}; " + (f"its stderr ends:{tail}" if tail else "its stderr is empty")

    def _exit_code(self):
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its stdout but lives on
            return "none (it closed its stdout and was stopped)"

    def _drain(self) -> list:
        self.pumps[0].join(2)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out

    def _stop(self):
        """Kill the port and everything it started (its own process group)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (OSError, AttributeError):  # the group is gone already (or no process groups: Windows)
            self.proc.kill()
        self.proc.wait()
        self.requests.put(None)
        self.proc = None

    def close(self):
        """The end of the session: stdin closed (the port should exit), then stopped whatever it left running."""
        if self.proc is None:
            return
        self.requests.put(None)
        self.pumps[2].join(10)
        if not self.pumps[2].is_alive():  # else a write is stuck: the port reads no more
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()


class ExecImpl:
    def __init__(self, process: ExecProcess, checkpoint: str):
        self._p, self._ckpt = process, checkpoint
        h = process.hello
        self.name, self.dtype, self.device = h.get("name", process.command), h.get("dtype"), h.get("device")
        for cap in h["capabilities"]:
            setattr(self, cap, self._method(cap))

    def _method(self, op):
        def call(*args):
            return self._p.call({"op": op, "checkpoint": self._ckpt, "args": [_wire(a) for a in args]})
        call.__name__ = op
        return call

    def logits(self, tokens):
        return self._p.call({"op": "logits", "checkpoint": self._ckpt, "args": [list(map(int, tokens))]})


class ExecFactory:
    """The port is started by start() (the kit does so before any check, so a port that cannot start stops the
    session in one line) or by the first checkpoint it is asked for."""

    def __init__(self, command: str):
        self.command = command
        self._proc = None

    def start(self, timeout: float = 600, start_timeout: float = 60):
        if self._proc is None:
            self._proc = ExecProcess(self.command, timeout, start_timeout)

    def __call__(self, checkpoint_dir: str):
        self.start()
        return ExecImpl(self._proc, str(checkpoint_dir))

    def close(self):
        if self._proc is not None:
            self._proc.close()
