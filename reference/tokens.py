"""Token ids as both implementations take them: one rule, one home (reference/model.py and optimized/generate.py
import it, so the reference and the engine accept and refuse the same prompts with the same words).

The rule: a prompt is a sequence (list, tuple, range, NumPy array, torch tensor) of integer ids, 1-D, non-empty,
each in [0, vocab_size). Integers are Python or NumPy or torch integers; bools are not ids (True is 1 to Python,
but a mask passed by mistake is not a prompt), and floats are not either, even integral ones (a float prompt is a
bug upstream). Iterators and generators are refused, not consumed: a check must not eat what it checks, and the
caller can say list(...) if it meant it. Errors name the first bad token and its position.

Not here: text (the tokenizer), or what a token id means.
"""
from collections.abc import Sequence

import numpy as np

SEQUENCE = "a sequence (list, tuple, NumPy array or torch tensor) of integer ids"


def check_tokens(tokens, vocab_size: int, what: str = "tokens") -> np.ndarray:
    """Token ids -> int64 array (T,), or a ValueError whose message starts with `what` (e.g. "prompt 3")."""
    if type(tokens).__module__.startswith("torch"):  # a torch tensor, without importing torch here
        tokens = tokens.tolist()  # torch's ints, bools and floats become Python's: one rule for all of them
        if not isinstance(tokens, list):
            raise ValueError(f"{what} must be a 1-D sequence of ids, got a 0-d tensor")
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 1:
            raise ValueError(f"{what} must be a 1-D sequence of ids, got shape {tokens.shape}")
        if tokens.dtype.kind in "iu":
            return _in_vocabulary(tokens, vocab_size, what)
        if tokens.size and tokens.dtype.kind != "O":  # bool, float, str ...: the first element is already wrong
            raise ValueError(f"{what} must be integers: token {tokens[0].item()!r} at position 0 is a {tokens.dtype}")
        tokens = tokens.tolist()
    elif isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
        raise ValueError(f"{what} must be {SEQUENCE}, got {type(tokens).__name__}")
    for i, t in enumerate(tokens):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            if isinstance(t, (Sequence, np.ndarray)) and not isinstance(t, str):
                raise ValueError(f"{what} must be a 1-D sequence of ids: position {i} holds a {type(t).__name__}")
            raise ValueError(f"{what} must be integers: token {t!r:.40} at position {i} is a {type(t).__name__}")
        if not 0 <= t < vocab_size:  # Python ints beyond int64 included: checked before any cast
            raise ValueError(f"{what}: token id {int(t)} at position {i} is outside the vocabulary [0, {vocab_size})")
    return _in_vocabulary(np.array([int(t) for t in tokens], dtype=np.int64), vocab_size, what)


def _in_vocabulary(arr: np.ndarray, vocab_size: int, what: str) -> np.ndarray:
    if arr.size == 0:
        raise ValueError(f"{what} is empty: the model needs at least one token")
    bad = np.nonzero((arr < 0) | (arr >= vocab_size))[0]  # uint64 beyond int64 compares correctly here
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{what}: token id {int(arr[i])} at position {i} is outside the vocabulary [0, {vocab_size})")
    return arr.astype(np.int64)
