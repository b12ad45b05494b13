"""Building the engine's C kernels (optimized/csrc/*.c) for the CPU decode path, once, and loading them.

Each source is compiled with the system C compiler (`cc`, or $CC; ~1 s, no torch headers, plain C ABI) into
a cache folder keyed by the hash of the source, the shared csrc/common.h and the flags, built aside and renamed
(safe when several processes build at once), then loaded with ctypes. `load` returns None and records why when there is no compiler, the source is
missing (an install without csrc/) or the build fails: the callers then keep their torch paths.
Not here: the kernels' arguments and checks (mxfp4_cpu.py, linear.py).
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CSRC = Path(__file__).with_name("csrc")
_loaded: dict[str, ctypes.CDLL | None] = {}
reasons: dict[str, str] = {}  # source name -> why it could not be loaded


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpt-oss-kit"


FLAGS = ["-O3", "-ffp-contract=off", "-shared", "-fPIC"]  # no contraction: a*b - c*d rounds as torch's ops do
# OpenMP: the kernels split their rows over threads. Linked against libgomp.so.1, they share the copy torch has
# already loaded (same soname), so torch.set_num_threads sets their thread count too. A compiler without OpenMP
# builds them single-threaded (the pragmas are ignored); each output is computed by one thread either way, so the
# numbers do not depend on the thread count.
OPENMP = ["-fopenmp"]


def _compile(cc: str, flags: list[str], source: Path, target: Path):
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        so = Path(tmp) / target.name
        run = subprocess.run([cc, *flags, "-o", str(so), str(source)], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{cc} failed on {source.name}: {run.stderr.strip()[:500]}")
        os.replace(so, target)


def _build(source: Path) -> ctypes.CDLL:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH")
    errors = []
    for flags in (FLAGS + OPENMP, FLAGS):
        headers = b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))  # common.h, included
        src = source.read_bytes() + headers + " ".join(flags).encode()  # the cache key covers headers and flags
        target = _cache_dir() / f"{source.stem}_{hashlib.sha256(src).hexdigest()[:16]}.so"
        try:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _compile(cc, flags, source, target)
            return ctypes.CDLL(str(target))
        except (OSError, RuntimeError) as e:  # no OpenMP (or no libgomp to load): try without
            errors.append(str(e))
    raise RuntimeError("; ".join(errors))


def load(name: str, signatures: dict[str, tuple[list, object]]) -> ctypes.CDLL | None:
    """The compiled csrc/<name> with `signatures` {function: (argtypes, restype)} set once, at its first load;
    or None (reason in `reasons[name]`). Later calls are one dict lookup (callers call it on their hot path)."""
    if name not in _loaded:
        try:
            lib = _build(CSRC / name)
            for fn, (argtypes, restype) in signatures.items():
                getattr(lib, fn).argtypes, getattr(lib, fn).restype = argtypes, restype
            _loaded[name] = lib
        except (OSError, RuntimeError, AttributeError) as e:
            _loaded[name], reasons[name] = None, f"{type(e).__name__}: {e}"
    return _loaded[name]
