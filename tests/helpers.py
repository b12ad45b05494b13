"""Small shared pieces for tests that need a tiny checkpoint or a hand-edited safetensors file.

TINY is the smallest config that still exercises every quirk: GQA (4 q-heads over 2 kv-heads), YaRN on
(valid ramp bounds for head_dim 16), a sliding window of 4 (so 12-token sequences cross it), 2 layers
(one windowed, one full), top-2 of 4 experts, MXFP4 blocks along hidden 64 and intermediate 32.
"""
import dataclasses
import json
import struct
from pathlib import Path

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
