"""safetensors files read and written with NumPy alone, memory-mapped, every byte checked.

What this is: the on-disk format of gpt-oss checkpoints, as the safetensors spec defines it
(https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian header length N, N bytes
of JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} relative to the end
of the header, an optional "__metadata__" entry of strings, then the packed little-endian data.

What this is not: a general safetensors library. It knows the dtypes gpt-oss uses (BF16, U8) and the
float dtypes a user's re-saved checkpoint may have (F16, F32). BF16 has no NumPy dtype: it is read as
uint16 and widened exactly (bf16 is the top half of an IEEE float32).

Every tensor is opened as its own np.memmap on first use and dropped by the caller after use, so a 13 GB
checkpoint costs only the pages actually touched, and they are unmapped again when the array dies.
"""
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# safetensors dtype name -> (numpy storage dtype, bytes per element)
DTYPES = {
    "BF16": (np.dtype("<u2"), 2),
    "F16": (np.dtype("<f2"), 2),
    "F32": (np.dtype("<f4"), 4),
    "F64": (np.dtype("<f8"), 8),
    "U8": (np.dtype("u1"), 1),
}
FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the spec's own bound on the JSON header


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be trusted; the message names the file and the tensor."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    def memmap(self) -> np.ndarray:
        """The stored values, lazily: pages are read only when touched."""
        storage, _ = DTYPES[self.dtype]
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=storage)
        return np.memmap(self.path, dtype=storage, mode="r", offset=self.offset, shape=self.shape)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 stored as uint16 -> float32, exactly (bf16 is the high half of a float32)."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def f64_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float -> bf16 bits (uint16), round to nearest even, as torch's .to(torch.bfloat16) does."""
    f = np.asarray(x, dtype=np.float32)
    assert np.all(np.isfinite(f)), "refusing to store a non-finite value as bf16"
    u = f.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def to_f64(entry: TensorEntry, values: np.ndarray) -> np.ndarray:
    """Stored values of a float tensor (a memmap or a slice of one) -> float64, exactly."""
    if entry.dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{entry.name} in {entry.path.name}: expected a float tensor, found {entry.dtype}")
    if entry.dtype == "BF16":
        return bf16_bits_to_f32(values).astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def read_header(path: str | os.PathLike) -> dict[str, TensorEntry]:
    """Parse and validate one .safetensors file's header; no tensor data is read."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path}: header length {n} does not fit the file ({size} bytes): truncated or not safetensors")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    except RecursionError:  # the spec's header is flat (name -> entry); only a crafted file nests this deep
        raise CheckpointError(f"{path}: corrupt safetensors header: its JSON nests too deeply") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: corrupt safetensors header: __metadata__ must map strings to strings")
    data_start = 8 + n
    entries, spans = {}, []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {info!r:.200}") from None
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, not one of {sorted(DTYPES)}")
        if not all(type(d) is int and d >= 0 for d in (*shape, begin, end)) or begin > end:
            raise CheckpointError(f"{path}: tensor {name!r} has invalid shape {shape} or offsets {begin, end}")
        nbytes = math.prod(shape) * DTYPES[dtype][1]  # Python ints: int64 would wrap [2**62 + 16, 4] to 128
        if end - begin != nbytes:
            raise CheckpointError(f"{path}: tensor {name!r} {dtype}{list(shape)} needs {nbytes} bytes, offsets give {end - begin}")
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {data_start + end} but the file has {size} bytes: truncated file")
        entries[name] = TensorEntry(name, path, dtype, shape, data_start + begin, nbytes)
        spans.append((begin, end, name))
    # As the safetensors library itself requires: the tensors tile the data region exactly, no overlap, no gap,
    # nothing after the last one. A header that leaves bytes unaccounted for was not written by a safetensors writer.
    spans.sort()
    covered, previous = 0, None
    for begin, end, name in spans:
        if begin < covered:
            raise CheckpointError(f"{path}: tensors {previous!r} and {name!r} overlap in the file: corrupt header")
        if begin > covered:
            raise CheckpointError(f"{path}: {begin - covered} bytes before tensor {name!r} belong to no tensor: corrupt header")
        covered, previous = end, name
    if data_start + covered != size:
        raise CheckpointError(f"{path}: {size - data_start - covered} bytes after the last tensor belong to no tensor: "
                              "corrupt header or a file with data appended")
    return entries


def write(path: str | os.PathLike, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict | None = None):
    """Write {name: (dtype, array)}; BF16 arrays are given as their uint16 bits."""
    specs = {name: (dtype, np.shape(arr)) for name, (dtype, arr) in tensors.items()}
    write_streaming(path, specs, lambda name: tensors[name][1], metadata)


def write_streaming(path, specs: dict[str, tuple[str, tuple[int, ...]]], produce, metadata: dict | None = None):
    """Write tensors one at a time: specs {name: (dtype, shape)}, produce(name) -> array of that shape.
    Only one tensor is in memory at a time, so checkpoints larger than RAM can be written."""
    header, offset = {}, 0
    names = sorted(specs)
    for name in names:
        dtype, shape = specs[name]
        nbytes = math.prod(int(d) for d in shape) * DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the spec pads the header with spaces to 8-byte alignment
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            dtype, shape = specs[name]
            arr = np.asarray(produce(name), dtype=DTYPES[dtype][0], order="C")  # 0-d stays 0-d
            if arr.shape != tuple(shape):
                raise ValueError(f"{name}: produced shape {arr.shape}, declared {tuple(shape)}")
            f.write(arr.tobytes())
