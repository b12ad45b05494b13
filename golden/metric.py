"""The kit's error metric, in one place below golden/ (which stores the baseline's errors) and conformance/ (which
bounds a port's by them): conformance/SPEC.md section 2.

  err(a, r)          max |a - r| / rms(r) over the whole output (r: the reference's float64 value)
  logprob_err(l, r)  max |Δ log p| over the reference's top LOGPROB_TOP tokens at each position
One decision on non-finite input: a non-finite value in `a` is an infinite error (a port's NaN fails its check;
golden generation refuses a baseline whose error is not finite, since it would make a bound infinite).
"""
import math

import numpy as np

LOGPROB_TOP = 5  # |Δ log p| over the reference's top-5 tokens


def err(a, r) -> float:
    a, r = np.asarray(a, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if r.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return math.inf
    rms = math.sqrt(float(np.mean(r * r)))
    return float(np.max(np.abs(a - r))) / (rms if rms > 0 else 1.0)


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def logprob_err(logits: np.ndarray, ref: np.ndarray, top: int = LOGPROB_TOP) -> float:
    ids = np.argsort(-ref, axis=-1, kind="stable")[:, :top]
    d = np.take_along_axis(log_softmax(logits), ids, -1) - np.take_along_axis(log_softmax(ref), ids, -1)
    return float(np.max(np.abs(d))) if d.size else 0.0
