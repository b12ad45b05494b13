"""Random weights with a config's REAL shapes, built directly in device memory (no disk), for GPU benchmarks
and memory checks on gpt-oss-20b/120b shapes without their checkpoints.

Same placement as checkpoint.load of a release-format file (packed experts, float32 norms and sinks, the rest in
the compute dtype; checkpoint.placed_dtype) and
the same fan-in scaling as reference/writer.py, so activations stay O(1); values are NOT those of writer.py
(torch's generator, not NumPy's), and carry no meaning. Tensors are made one at a time on the device.
"""
import math

import torch

from optimized.checkpoint import Weights, placed_dtype
from reference.checkpoint import expected_tensors


def synthetic_weights(config, device="cuda", dtype=torch.bfloat16, seed: int = 0) -> Weights:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    C = config.hidden_size
    tensors = {}
    for name, (shape, kind) in expected_tensors(config).items():
        want = placed_dtype(name, kind, dtype, device)
        if kind == "u8" and name.endswith(".blocks"):
            t = torch.randint(0, 256, shape, generator=g, device=device, dtype=torch.uint8)
        elif kind == "u8":  # E8M0 scales aimed at 1/(2.9*sqrt(fan_in)), as writer.py does
            base = 127 + math.floor(math.log2(1.0 / (2.9 * math.sqrt(shape[-1] * 32))))
            t = (base + torch.randint(0, 2, shape, generator=g, device=device, dtype=torch.int32)).to(torch.uint8)
        else:
            leaf = name.split(".", 2)[-1] if name.startswith("block.") else name
            std = {"embedding.weight": 1.0, "unembedding.weight": C ** -0.5, "attn.qkv.weight": C ** -0.5,
                   "attn.out.weight": shape[-1] ** -0.5, "mlp.gate.weight": C ** -0.5, "attn.sinks": 1.0}.get(leaf, 0.1)
            t = torch.randn(shape, generator=g, device=device, dtype=torch.float32).mul_(std)
            if leaf.endswith("norm.scale"):
                t += 1.0
            t = t.to(want)
        tensors[name] = t
    return Weights(config, tensors, dtype)
