"""State of one kit run: the golden data (verified once, shared), the implementation under test, the results.

Golden arrays are cached per (folder, manifest hash) for the whole process, so running the kit many times in
one process (tests/test_conformance_wrong_ports.py) loads them once.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from conformance import plugin, spec
from golden import derived, real
from golden import format as gformat

_CACHE: dict = {}  # (root, manifest sha256, what) -> loaded data


class Golden:
    def __init__(self, root, layout: str = "original"):
        assert layout in derived.LAYOUTS, layout  # the real-shape tier's native form is "hf" (Kit picks it by default)
        self.root = Path(root).resolve()
        self.layout = layout  # synthetic golden data: the form of the checkpoint folder a port is handed
        self._real_original = None  # the real-shape tier's original form, once written and hash-checked
        self._manifest = None
        self._error = None

    # listing (for parametrization) reads the manifest without verifying; every test verifies first
    def listing(self) -> dict:
        try:
            m = json.loads((self.root / gformat.MANIFEST).read_text())
            ops = {}
            for rel in m.get("files", {}):
                if rel.startswith("ops/") and rel.endswith(".npz"):
                    op = Path(rel).stem
                    try:
                        keys = gformat.load_npz(self.root / rel)
                    except Exception:  # noqa: BLE001 - a broken file is reported by verify(), not here
                        keys = {"c0.": None}
                    ops[op] = sorted({k.split(".")[0] for k in keys}, key=lambda c: int(c[1:]) if c[1:].isdigit() else 0)
            cases = [Path(rel).stem for rel in m.get("files", {}) if rel.startswith("cases/")]
            text = "text/vectors.json" in m.get("files", {})
            return {"ops": ops, "cases": sorted(cases), "text": text}
        except Exception:  # noqa: BLE001 - unreadable manifest: one placeholder item per test, which FAILS
            return {"ops": {op: ["unavailable"] for op in gformat.OP_NAMES}, "cases": ["unavailable"], "text": True}

    @property
    def manifest(self) -> dict:
        if self._error:
            raise self._error
        if self._manifest is None:
            try:
                self._manifest = gformat.verify(self.root)
            except gformat.GoldenError as e:
                self._error = e
                raise
        return self._manifest

    @property
    def manifest_sha256(self) -> str:
        return gformat.manifest_hash(self.root)

    def _cached(self, what, load):
        key = (str(self.root), self.manifest_sha256, what)
        if key not in _CACHE:
            self.manifest  # noqa: B018 - verify before the first use of any file
            _CACHE[key] = load()
        return _CACHE[key]

    def op(self, name: str, case: str) -> dict:
        data = self._cached(("op", name), lambda: gformat.load_npz(self.root / "ops" / f"{name}.npz"))
        prefix = case + "."
        got = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
        if not got:
            raise gformat.GoldenError(f"golden ops/{name}.npz has no case {case!r}")
        return got

    def case(self, name: str) -> dict:
        return self._cached(("case", name), lambda: gformat.load_npz(self.root / "cases" / f"{name}.npz"))

    def text(self) -> dict:
        return self._cached("text", lambda: json.loads((self.root / "text" / "vectors.json").read_text()))

    def checkpoint_dir(self, case: str) -> Path:
        entry = self.manifest["checkpoints"].get(case)
        if entry is None:
            raise gformat.GoldenError(f"golden manifest names no checkpoint for case {case!r}")
        if "path" in entry:  # a user's checkpoint, referenced in place; its config must be unchanged
            path = Path(entry["path"])
            cfg = path / "config.json"
            if not cfg.is_file() or gformat.sha256(cfg) != entry["files"].get("config.json"):
                raise gformat.GoldenError(f"checkpoint {path} is missing or its config.json changed since the "
                                          f"golden data was generated")
            for f, _ in entry["files"].items():
                if not (path / f).is_file():
                    raise gformat.GoldenError(f"checkpoint file {path / f} is missing")
            if self.layout != "original":
                raise gformat.GoldenError(f"--layout {self.layout} gives a port another form of the kit's synthetic "
                                          f"checkpoints; this golden data's checkpoint is your own {path} "
                                          f"({entry.get('layout')} layout, {entry.get('experts', 'mxfp4')} experts), "
                                          f"handed to the port as it is: drop --layout")
            return path
        if "dir" in entry:  # the real-shape tier (golden/real.py): its HF root, or its original form on demand
            if self.layout == "hf":
                return self.root / entry["dir"]
            if self.layout == "original":
                if self._real_original is None:  # written on first use, hash-checked once per run (gigabytes)
                    self._real_original = real.original_form(self.root, self.manifest["tier"], self.manifest)
                return self._real_original
            raise gformat.GoldenError(f"--layout {self.layout}: the real-shape tier {self.manifest.get('tier')} has "
                                      f"the release's two forms, hf (its default) and original")
        if self.layout == "original":
            return self.root / "checkpoints" / case
        # a derived form (HF names, or the dense twin): the same model, so the same golden logits
        return derived.checkpoint_dir(self.root, self.manifest, self.layout, case)

    def first_checkpoint(self) -> Path:
        return self.checkpoint_dir(sorted(self.listing()["cases"])[0])


class Kit:
    def __init__(self, config):
        self.config = config
        self.impl_name = config.getoption("--impl")
        self.dtype_opt = config.getoption("--dtype")
        self.activations_opt = config.getoption("--activations")
        self.device_opt = config.getoption("--device")
        golden = config.getoption("--golden")
        self.tier = golden_tier(golden)  # --golden real-20b: made on first use in a cache folder (_preflight)
        # the form a port is handed: the golden data's own unless --layout says otherwise (the real-shape tier is
        # the release's HF root; the synthetic checkpoints are OpenAI's original layout)
        self.layout = config.getoption("--layout") or ("hf" if self.tier else "original")
        root = real_cache_dir(self.tier) if self.tier else (golden or gformat.DATA_DIR)
        self.golden = Golden(root, self.layout)
        self.certificate = config.getoption("--certificate")
        self._factory = None
        self._impls: dict[str, object] = {}
        self.identity: dict = {}
        self.results: list[dict] = []

    @property
    def factory(self):
        if self._factory is None:
            dtype = spec.base_dtype(self.dtype_opt) if self.dtype_opt else None  # bf16+int8: the bf16 factory
            self._factory, spec_ = plugin.resolve(self.impl_name, dtype, self.device_opt)
            self.identity["factory"] = spec_
        return self._factory

    def impl(self, checkpoint_dir) -> object:
        """The port for a golden checkpoint (made once). The model checks need its logits(): model_impl."""
        key = str(checkpoint_dir)
        if key not in self._impls:
            impl = self.factory(key)
            self._impls[key] = impl
            if not self.identity.get("name"):
                has_logits = callable(getattr(impl, "logits", None))  # a server has top_logprobs instead
                self.identity |= {"impl": self.impl_name, "name": str(getattr(impl, "name", self.impl_name)),
                                  "declared_dtype": getattr(impl, "dtype", None),
                                  "declared_activations": getattr(impl, "activations", None),
                                  "device": str(getattr(impl, "device", None) or "unknown"),
                                  "capabilities": ["logits"] * has_logits + plugin.capabilities(impl),
                                  "checkpoint_layout": self.layout}
                self.identity["dtype"] = self._dtype(impl)
        return self._impls[key]

    def model_impl(self, checkpoint_dir) -> object:
        """impl(), which must have logits() (or, a server, top_logprobs()): the one capability a model port must
        have. A port without either (a tokenizer, a chat template) can still run the op and text checks, and fails
        every model check."""
        impl = self.impl(checkpoint_dir)
        if not callable(getattr(impl, "logits", None)) and not callable(getattr(impl, "top_logprobs", None)):
            raise plugin.ImplError(f"--impl {self.impl_name}: the object from the factory has no logits() "
                                   f"method (the one required capability of a model port; a server: top_logprobs())")
        return impl

    def _dtype(self, impl) -> str:
        """The precision class whose bounds apply: --dtype/--activations, else the port's dtype/activations."""
        told = self.activations_opt or "+" in (self.dtype_opt or "")  # the command line's class wins
        activations = self.activations_opt if told else getattr(impl, "activations", None)
        dtype = self.dtype_opt or getattr(impl, "dtype", None)
        if not dtype:
            self.identity["dtype_note"] = "the port declares no dtype: bfloat16 bounds apply"
            dtype = "bfloat16"
        try:
            return spec.precision_class(dtype, activations)
        except ValueError as e:
            raise plugin.ImplError(f"--impl {self.impl_name}: {e}") from None

    @property
    def dtype(self) -> str:
        if "dtype" not in self.identity:
            self.impl(self.golden.first_checkpoint())
        return self.identity["dtype"]

    def op_impl(self):
        return self.impl(self.golden.first_checkpoint())

    def close(self):
        if hasattr(self._factory, "close"):
            self._factory.close()


def golden_tier(option) -> str | None:
    """The real-shape tier a --golden value names (real-20b, real-120b), unless a folder of that name exists."""
    return option if option in real.TIERS and not Path(option).is_dir() else None


def real_cache_dir(tier: str) -> Path:
    return real.cache_dir(tier)


def ensure_tier(kit: "Kit") -> None:
    """Generate the real-shape tier on first use, verify it by hash (once: the manifest is kept for the run)."""
    root, manifest = real.ensure(kit.tier)
    kit.golden.root, kit.golden._manifest = root.resolve(), manifest


def need(impl, capability: str):
    """The port's method for a capability, or a NOT_SUPPORTED skip."""
    fn = getattr(impl, capability, None)
    if not callable(fn):
        pytest.skip(f"not supported: the implementation has no {capability}()")
    return fn


def record(request, **measure):
    request.node.user_properties.append(("measure", measure))


def check(request, name: str, measured: float, bound_: float, message: str = "", **extra):
    """Record a measurement and fail when it exceeds its bound (NaN and inf always exceed)."""
    ok = bool(np.isfinite(measured) and measured <= bound_)
    record(request, check=name, measured=float(measured), bound=float(bound_), ok=ok, **extra)
    if not ok:
        pytest.fail(f"{name}: error {measured:.3g} > bound {bound_:.3g}" + (f": {message}" if message else ""),
                    pytrace=False)
