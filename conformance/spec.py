"""The tolerance contract of conformance/SPEC.md, as code: one error metric (its home: golden/metric.py), bounds
relative to a baseline.

metric   err(a, r) = max |a - r| / rms(r)     over a check's whole output (r: the reference's float64 value)
bound    FACTOR * baseline[class] + FLOOR[dtype]
         baseline[class]: the measured err of golden/baseline.py (a plain port, same dtype) on the same data,
         stored in the golden files; float64 ports have no baseline and get FLOOR alone. A class is a dtype, or
         a dtype plus an activation rounding ("bfloat16+int8", golden/activations.py) for the model checks.
MXFP4 decode is exact in value (-0 equals +0; no metric); RoPE tables have an analytic dtype-aware bound
(rope_bound), measured as a ratio to it, so a rope/* bound is 1.
SPEC.md gives each number's measurement; change a number there and here together.
"""

import numpy as np

from golden.activations import ACTIVATIONS, CLASSES, split_class
from golden.metric import LOGPROB_TOP, err, log_softmax, logprob_err  # noqa: F401 (the kit's metric, re-exported)

FACTOR = 4.0  # a port may be this many times worse than the plain same-dtype port
FLOOR = {"float64": 1e-9, "float32": 1e-6, "bfloat16": 2e-3}
# a token's routing counts as clear in a dtype when its top-k margin (every layer) exceeds this many times the
# baseline's largest router-logit error on the case; outputs and expert ids are compared at clear positions
ROUTE_CLEAR = 1.0
# argmax / greedy tokens must agree where the reference's top-1 margin exceeds this many times the port's
# own largest logit error on that row (a smaller margin can flip legitimately)
ARGMAX_CLEAR = 2.0
ROPE_ULPS = 8.0  # RoPE: |Δ| <= ROPE_ULPS * (eps_table * |angle| + eps_dtype) * concentration
EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "bfloat16": 2.0 ** -7}
DTYPE_ALIASES = {"float64": "float64", "fp64": "float64", "double": "float64", "float32": "float32",
                 "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                 "float16": "bfloat16", "fp16": "bfloat16", "half": "bfloat16"}


def canonical_dtype(name: str) -> str:
    """A port's declared dtype -> the bound class. float16 ports get bfloat16 bounds (fewer exponent bits,
    more mantissa: at least as accurate on these data)."""
    key = str(name).lower().replace("torch.", "").replace("numpy.", "")
    if key not in DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {name!r}: use one of {sorted(set(DTYPE_ALIASES))}")
    return DTYPE_ALIASES[key]


def precision_class(dtype: str, activations: str | None = None) -> str:
    """--dtype and --activations -> the bound class: "bfloat16", "bfloat16+int8"... (a class name is taken as
    --dtype too: a certificate records one)."""
    dtype, own = split_class(str(dtype))
    if own and activations and own != activations:
        raise ValueError(f"--dtype {dtype}+{own} and --activations {activations} disagree")
    base, activations = canonical_dtype(dtype), activations or own
    if activations is None:
        return base
    if activations not in ACTIVATIONS:
        raise ValueError(f"unknown activation rounding {activations!r}: use one of {', '.join(ACTIVATIONS)}")
    cls = f"{base}+{activations}"
    if cls not in CLASSES:  # float64 rounds nothing; float32+fp8 has no baseline (no kernel does it)
        raise ValueError(f"no precision class {cls}: the golden baselines cover "
                         f"{', '.join(c for c in CLASSES if '+' in c)}")
    return cls


KNOWN_CLASSES = ("float64",) + CLASSES  # every class a certificate may record


def base_dtype(cls: str) -> str:
    """The dtype of a class ("bfloat16+int8" -> "bfloat16"): op checks and floors use it (ops round nothing)."""
    return split_class(cls)[0]


def bound(cls: str, baseline: float | None) -> float:
    """FACTOR x the baseline's error in the class + the dtype's floor; float64 has no baseline."""
    base = 0.0 if cls == "float64" else float(baseline)
    return FACTOR * base + FLOOR[base_dtype(cls)]


def baseline_of(data: dict, key: str) -> float | None:
    """A stored baseline error, or None for float64; golden data without the class is one clear error."""
    if key.startswith("baseline.float64"):
        return None
    if key not in data:
        raise KeyError(f"the golden data has no {key} (made by a kit before this precision class; regenerate "
                       f"with `python -m golden`)")
    return float(data[key])


def case_bound(case: dict, cls: str, stage: str) -> float:
    """The bound of one model output on a golden case: stage "logits", "logprob", "norm", "block.0.attn"..."""
    return bound(cls, baseline_of(case, f"baseline.{cls}.{stage}"))


def op_bound(vectors: dict, cls: str) -> float:
    """The bound of an op case (its golden vectors, keys without the case prefix): by the class's dtype."""
    dt = base_dtype(cls)
    return bound(dt, baseline_of(vectors, f"baseline.{dt}"))


# what the model checks compare, beside their bounds (conformance/test_model.py; verify recomputes from these)


def decode_prefills(T: int) -> list[int]:
    """decode/*: prefill 1 token, and half the prompt (crosses the sliding window)."""
    return sorted({1, T // 2})


def batch_lengths(T: int) -> list[int]:
    """batch/*: three ragged prefixes of the prompt in one call."""
    return [T, max(1, T - 3), max(1, T // 3)]


def rope_bound(angles: np.ndarray, concentration: float, dtype: str) -> np.ndarray:
    """Elementwise bound on cos/sin tables: the angle may be computed in float32 (as gpt-oss does) by any
    port that is not float64, then the table rounded to the port's dtype."""
    eps_table = EPS["float64"] if dtype == "float64" else EPS["float32"]
    return ROPE_ULPS * (eps_table * np.abs(angles) + EPS[dtype]) * concentration


def representable(values: np.ndarray, dtype: str) -> np.ndarray:
    """Which float64 values a dtype holds exactly (MXFP4 decodes are exact only where representable)."""
    v = np.asarray(values, dtype=np.float64)
    if dtype == "float64":
        return np.isfinite(v)
    with np.errstate(over="ignore"):
        f = v.astype(np.float32)
    ok = np.isfinite(f) & (f.astype(np.float64) == v)
    if dtype == "bfloat16":
        bits = f.view(np.uint32)
        ok &= (bits & 0xFFFF) == 0
    return ok
