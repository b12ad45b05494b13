"""Dense projections (qkv, out, router, unembedding): torch's linear, except a single row on CPU.

One row (batch-1 decode) on CPU goes to torch.mv / torch.addmv: in torch 2.13's CPU kernels they run a
bfloat16 matrix-vector product ~1.5x faster than linear's matmul path (bench/engine_cpu.py; float32 is
unchanged). Same math: sum over the input axis, accumulated in float32, bias added, one rounding to the dtype.
Not here: the packed MXFP4 experts (moe.py, mxfp4_cpu.py).

Legend: N rows, C input features, O output features.
"""
import torch


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., C), w (O, C), b (O,) or None -> (..., O)."""
    O, C = w.shape
    assert x.shape[-1] == C and (b is None or tuple(b.shape) == (O,)), (x.shape, w.shape, None if b is None else b.shape)
    if x.device.type == "cpu" and x.numel() == C:
        v = x.reshape(C)
        y = torch.mv(w, v) if b is None else torch.addmv(b, w, v)
        return y.reshape(*x.shape[:-1], O)
    return torch.nn.functional.linear(x, w, b)
