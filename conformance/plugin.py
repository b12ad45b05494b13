"""Finding the implementation under test: `--impl` names, the plugin protocol, the exec: bridge.

Protocol (conformance/README.md): a factory `factory(checkpoint_dir) -> impl`; `impl.logits(tokens)` is
required; everything in OPTIONAL is a capability a port may have. A missing capability makes its checks
NOT_SUPPORTED (a pytest skip whose reason starts with "not supported:"), never passed.
"""
import base64
import importlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

OPTIONAL = ["decode_logits", "batch_logits", "intermediates", "op_mxfp4_decode", "op_rms_norm", "op_swiglu",
            "op_route", "op_rope_cos_sin", "op_attention", "tokenize", "tokenize_special", "detokenize", "render",
            "parse", "parse_stream"]
BUILTIN = {"reference": "conformance.impls.reference:factory",
           "transformers": "conformance.impls.transformers:factory",
           "optimized": "optimized.adapter:factory"}
BF16_FACTORY = {"optimized": "optimized.adapter:factory_bf16", "transformers": "conformance.impls.transformers:factory_bf16"}
CUDA_FACTORY = {"optimized": ("optimized.adapter:factory_cuda", "optimized.adapter:factory_cuda_bf16")}  # fp32, bf16


class ImplError(RuntimeError):
    """The --impl could not be found or loaded; the message says what to fix."""


def _load_attr(spec: str):
    if ":" not in spec:
        raise ImplError(f"--impl {spec!r}: expected reference, optimized, transformers, package.module:factory, "
                        f"path/to/file.py:factory or exec:COMMAND")
    mod_name, attr = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name).resolve()
            if not path.is_file():
                raise ImplError(f"--impl {spec!r}: no file {path}")
            s = importlib.util.spec_from_file_location(f"_conformance_impl_{path.stem}", path)
            module = importlib.util.module_from_spec(s)
            sys.modules[s.name] = module
            s.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ImplError(f"--impl {spec!r}: cannot import {mod_name!r} ({e})") from None
    if not hasattr(module, attr):
        raise ImplError(f"--impl {spec!r}: module {mod_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def resolve(name: str, dtype: str | None, device: str | None = None):
    """--impl (and --dtype, --device) -> (factory, identity string)."""
    if device == "cuda" and name not in CUDA_FACTORY:
        raise ImplError(f"--device cuda applies to the built-in {sorted(CUDA_FACTORY)} only; --impl {name!r} "
                        f"chooses its device in its own factory")
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
        if name == "optimized" and importlib.util.find_spec("optimized.adapter") is None:
            raise ImplError("--impl optimized: optimized/adapter.py does not exist yet (it must define "
                            "factory and factory_bf16 per conformance/README.md)")
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


class ExecProcess:
    """One child process for the whole session; one JSON request per line, one JSON response per line."""

    def __init__(self, command: str):
        self.command = command
        self.proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None, text=True, bufsize=1, env=os.environ.copy())
        self.lock = threading.Lock()
        self.next_id = 0
        self.hello = self.call({"op": "hello"})
        if not isinstance(self.hello, dict) or "capabilities" not in self.hello:
            raise ImplError(f"exec:{command}: the hello response must be an object with 'capabilities'")

    def call(self, request: dict):
        with self.lock:
            self.next_id += 1
            request = {"id": self.next_id, **request}
            try:
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                raise ImplError(f"exec:{self.command}: the process exited (code {self.proc.poll()})") from None
            line = self.proc.stdout.readline()
        if not line:
            raise ImplError(f"exec:{self.command}: no response to {request['op']!r} (process exit code "
                            f"{self.proc.poll()})")
        try:
            resp = json.loads(line)
        except json.JSONDecodeError:
            raise ImplError(f"exec:{self.command}: response to {request['op']!r} is not JSON: {line[:200]!r}") from None
        if resp.get("id") != request["id"]:
            raise ImplError(f"exec:{self.command}: response id {resp.get('id')!r} for request {request['id']}")
        if "error" in resp:
            raise RuntimeError(f"exec port error on {request['op']!r}: {resp['error']}")
        return _unwire(resp.get("result"))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


class ExecImpl:
    def __init__(self, process: ExecProcess, checkpoint: str):
        self._p, self._ckpt = process, checkpoint
        h = process.hello
        self.name, self.dtype, self.device = h.get("name", process.command), h.get("dtype"), h.get("device")
        for cap in h["capabilities"]:
            if cap != "logits" and cap not in OPTIONAL:
                raise ImplError(f"exec port declares unknown capability {cap!r} (known: logits, {OPTIONAL})")
            setattr(self, cap, self._method(cap))

    def _method(self, op):
        def call(*args):
            return self._p.call({"op": op, "checkpoint": self._ckpt, "args": [_wire(a) for a in args]})
        call.__name__ = op
        return call

    def logits(self, tokens):
        return self._p.call({"op": "logits", "checkpoint": self._ckpt, "args": [list(map(int, tokens))]})


class ExecFactory:
    def __init__(self, command: str):
        self.command = command
        self._proc = None

    def __call__(self, checkpoint_dir: str):
        if self._proc is None:
            self._proc = ExecProcess(self.command)
        return ExecImpl(self._proc, str(checkpoint_dir))

    def close(self):
        if self._proc is not None:
            self._proc.close()
