"""Loading a checkpoint folder (original or HF layout) onto a device, tensor by tensor.

Validation (layout detection, config, every tensor's name, shape and dtype) is reference/checkpoint.py's,
shared; only the placement is here. Each tensor is read from its memory map, converted once and moved to the
device before the next one is touched, so host memory holds at most one tensor. Placement:
  - MoE experts stay packed: uint8 blocks and E8M0 scales (a 0xFF NaN scale is refused here); a checkpoint with
    dense experts (HF's gate_up_proj/down_proj, a dequantized or bf16 fine-tuned model) has them in the compute
    dtype, in the original orientation (mlp1_weight (E, 2I, C), mlp2_weight (E, C, I): transposed once here);
  - norm scales and attention sinks in float32 (tiny; used in float32 math);
  - everything else (embedding, qkv/out, router, expert biases, unembedding) in the compute dtype, except that
    a float32 model on CPU keeps the big matrices the file stores in bf16 (embedding, qkv/out, router,
    unembedding; the release format) in bf16: widening is exact, so every number is the float32 model's, and
    a decode step reads half the bytes (linear.py widens them in its kernels; the embedding rows on lookup).
The loader may re-layout weights once here; it does not (the torch ops read the release layout).
Out of device memory while loading raises LoadError naming the tensor, its size and what was placed so far.
"""
import numpy as np
import torch

from reference.checkpoint import Checkpoint, expected_tensors, hf_name, hf_qkv_names, hf_transposed
from reference.mxfp4 import SCALE_NAN
from reference.tensorfile import CheckpointError

FP32_LEAVES = ("norm.scale", "attn.sinks")
NARROW_LEAVES = ("embedding.weight", "qkv.weight", "out.weight", "gate.weight")  # unembedding.weight too
ATTN = ("norm.scale", "qkv.weight", "qkv.bias", "sinks", "out.weight", "out.bias")
MLP = ("norm.scale", "gate.weight", "gate.bias", "mlp1_weight.blocks", "mlp1_weight.scales", "mlp1_bias",
       "mlp2_weight.blocks", "mlp2_weight.scales", "mlp2_bias")
MLP_DENSE = ("norm.scale", "gate.weight", "gate.bias", "mlp1_weight", "mlp1_bias", "mlp2_weight", "mlp2_bias")
OOM_ERRORS = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


class LoadError(MemoryError):
    """The device ran out of memory while placing the weights; the message says which tensor and how much."""


def placed_dtype(name: str, kind: str, dtype: torch.dtype, device="cuda", stored=torch.bfloat16) -> torch.dtype:
    """The dtype a tensor gets on the device; `stored` is its dtype in the file (bf16 in the release)."""
    if kind == "u8":
        return torch.uint8
    if name.endswith(FP32_LEAVES):
        return torch.float32
    if (dtype == torch.float32 and stored == torch.bfloat16 and torch.device(device).type == "cpu"
            and name.endswith(NARROW_LEAVES)):
        return torch.bfloat16  # quirk (ours): a float32 model keeps bf16-stored matrices bf16 on CPU, exactly
    return dtype


class Weights:
    """Canonical name -> tensor on the device, with per-layer views for the blocks."""

    def __init__(self, config, tensors: dict[str, torch.Tensor], dtype: torch.dtype, layout: str = "original"):
        self.config, self.tensors, self.dtype = config, tensors, dtype  # dtype: the compute dtype
        self.layout = layout  # the checkpoint's ("original" | "hf"): errors name tensors as it stores them
        self.experts = "dense" if "block.0.mlp.mlp1_weight" in tensors else "mxfp4"
        L = config.num_hidden_layers
        self.attn = [{n: tensors[f"block.{i}.attn.{n}"] for n in ATTN} for i in range(L)]
        self.mlp = [{n: tensors[f"block.{i}.mlp.{n}"] for n in (MLP_DENSE if self.experts == "dense" else MLP)}
                    for i in range(L)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _stored(ckpt: Checkpoint, src: str) -> torch.Tensor:
    """One stored tensor as a host torch tensor of its stored dtype (bf16 reinterpreted, not converted)."""
    e = ckpt.entries[src]
    arr = np.array(e.memmap())  # one copy, owned (memmaps are read-only)
    if e.dtype == "BF16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def _host_tensor(ckpt: Checkpoint, name: str) -> torch.Tensor:
    if ckpt.layout == "original":
        return _stored(ckpt, name)
    if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):  # HF splits qkv into q, k, v
        parts = hf_qkv_names(int(name.split(".")[1]), name.rsplit(".", 1)[1])
        return torch.cat([_stored(ckpt, p) for p in parts], dim=0)
    if hf_transposed(name):  # HF's dense experts (E, C, 2I) / (E, I, C) -> the original's (E, 2I, C) / (E, C, I)
        return _stored(ckpt, hf_name(name)).transpose(1, 2).contiguous()
    return _stored(ckpt, hf_name(name))


def place(host: torch.Tensor, device, dtype) -> torch.Tensor:
    return host.to(device=device, dtype=dtype)


def load(path, device="cpu", dtype=torch.bfloat16) -> Weights:
    """Validate the folder (reference/checkpoint.py), then place every tensor on the device."""
    ckpt = path if isinstance(path, Checkpoint) else Checkpoint(path)
    config, device = ckpt.config, torch.device(device)
    tensors, placed = {}, 0
    if device.type == "cuda":  # refuse up front rather than after minutes of copying
        need = sum(torch.Size(shape).numel() * torch.empty((), dtype=placed_dtype(n, k, dtype, device)).element_size()
                   for n, (shape, k) in expected_tensors(config, ckpt.experts).items())
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            raise LoadError(f"{ckpt.path}: the weights need {need / 2**30:.2f} GiB on {device}, "
                            f"only {free / 2**30:.2f} GiB is free")
    for name, (shape, kind) in expected_tensors(config, ckpt.experts).items():
        host = _host_tensor(ckpt, name)
        assert tuple(host.shape) == shape, (name, tuple(host.shape), shape)  # validated by Checkpoint already
        if kind == "u8" and name.endswith(".scales") and bool((host == SCALE_NAN).any()):
            raise CheckpointError(f"{ckpt.path}: {name!r} holds an E8M0 NaN scale (0xFF)")
        if kind == "float" and not bool(torch.isfinite(host).all()):
            raise CheckpointError(f"{ckpt.path}: tensor {name!r} holds non-finite values")
        want = placed_dtype(name, kind, dtype, device, host.dtype)
        try:
            tensors[name] = place(host, device, want)
        except OOM_ERRORS as e:
            size = host.numel() * torch.empty((), dtype=want).element_size()
            raise LoadError(f"out of memory on {device} placing {name!r} {list(shape)} {want} ({size / 2**20:.1f} MiB) "
                            f"after {placed / 2**30:.2f} GiB of weights; see optimized.memory.plan_memory "
                            f"for what this model needs") from e
        placed += tensors[name].numel() * tensors[name].element_size()
        del host
    return Weights(config, tensors, dtype, ckpt.layout)
