"""Small shared pieces for tests that need a tiny checkpoint or a hand-edited safetensors file.

TINY is the smallest config that still exercises every quirk: GQA (4 q-heads over 2 kv-heads), YaRN on
(valid ramp bounds for head_dim 16), a sliding window of 4 (so 12-token sequences cross it), 2 layers
(one windowed, one full), top-2 of 4 experts, MXFP4 blocks along hidden 64 and intermediate 32.
"""
import dataclasses
import json
import struct
from pathlib import Path

import numpy as np

from reference.config import Config
from reference.writer import write_checkpoint

TINY = Config(num_hidden_layers=2, num_experts=4, experts_per_token=2, vocab_size=97, hidden_size=64,
              intermediate_size=32, swiglu_limit=7.0, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
              sliding_window=4, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
              rope_ntk_alpha=1.0, rope_ntk_beta=32.0)


def tiny_config(**changes) -> Config:
    return dataclasses.replace(TINY, **changes)


def write_tiny(path, config: Config = TINY, seed: int = 0, **kw) -> Path:
    """A tiny random checkpoint folder (writer.write_checkpoint; kw: layout, shards, float_dtype, overrides)."""
    return write_checkpoint(Path(path), config, seed=seed, **kw)


def read_raw(path) -> tuple[dict, bytes]:
    """A safetensors file split into its JSON header (dict) and its data bytes."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw(path, header: dict, data: bytes):
    """Write a header dict and data bytes as a safetensors file, with no checks (to build corrupt files)."""
    head = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(head)) + head + data)


# Token ids that the reference and the engine must refuse alike (reference/tokens.py, one rule for both), with the
# words the error must carry (vocabulary 97); the engine prefixes "prompt 0" where the reference says "tokens".
BAD_TOKENS = [
    ([True, False], r"must be integers: token True at position 0 is a bool"),
    ([1, True], r"must be integers: token True at position 1 is a bool"),
    ([1, 2.0], r"must be integers: token 2.0 at position 1 is a float"),
    ([1e20], r"must be integers: token 1e\+20 at position 0 is a float"),
    (["a", "b"], r"must be integers: token 'a' at position 0 is a str"),
    ((t for t in [1, 2]), r"must be a sequence \(list, tuple, NumPy array or torch tensor\) of integer ids, got "
                          r"generator"),
    (iter([1, 2]), r"got list_iterator"),
    ("123", r"got str"),
    (7, r"got int"),
    ([[1, 2]], r"must be a 1-D sequence of ids: position 0 holds a list"),
    (np.zeros((1, 2), dtype=np.int64), r"must be a 1-D sequence of ids, got shape \(1, 2\)"),
    (np.int64(3), r"got int64"),
    ([], r"is empty"),
    (np.array([], dtype=np.int64), r"is empty"),
    (np.array([1.0, 2.0]), r"must be integers: token 1.0 at position 0 is a float64"),
    (np.array([True]), r"must be integers: token True at position 0 is a bool"),
    ([1, 2, 97], r"token id 97 at position 2 is outside the vocabulary \[0, 97\)"),
    ([-1], r"token id -1 at position 0 is outside the vocabulary"),
    (np.array([5, 2**40], dtype=np.int64), r"token id 1099511627776 at position 1 is outside"),
    (np.array([2**64 - 1], dtype=np.uint64), r"token id 18446744073709551615 at position 0"),
    ([1, 2**70], r"token id 1180591620717411303424 at position 1"),
]
GOOD_TOKENS = [[1, 2, 3], (1, 2, 3), range(1, 4), np.array([1, 2, 3], dtype=np.uint8), [np.int32(1), 2, np.uint64(3)]]
