"""Activation rounding of the precision classes `--activations int8` and `--activations fp8` (conformance/SPEC.md
section 2): what a kernel does to the activations before it multiplies them by MXFP4 expert weights.

What this is: the rounding rule that golden/baseline.py applies at the two expert matmuls (mlp1's input, the
normed residual; mlp2's input, the SwiGLU output), so that a port whose kernels round there gets bounds measured
on an honest port that rounds the same way. Blocks are 32 values along the contraction dimension, the MXFP4
block size; every expert matmul's input dimension is a multiple of 32.
- int8: llama.cpp's Q8_0, the `vec_dot_type` of its CPU MXFP4 matmuls (ggml-quants.c `quantize_row_q8_0_ref`):
  d = amax / 127 stored as float16, q = round(x / d) with the unrounded d, value = fp16(d) * q.
- fp8: OCP MXFP8 E4M3 (the MX spec, as MoE kernels on Blackwell take activations): a shared power-of-two scale
  2^(floor(log2 amax) - 8) per block (8: E4M3's largest exponent), elements rounded to E4M3, saturating at 448
  (the spec's rule: a block's largest values, up to 511 before scaling, are clipped to 448).
What this is not: a weight format (weights stay as released) or a fast kernel.
"""
import torch

BLOCK = 32
ACTIVATIONS = ("int8", "fp8")  # the names `--activations` takes
# the precision classes whose baseline errors golden model cases store: a run dtype, or a run dtype plus the
# activation rounding at the expert matmuls ("bfloat16+int8": llama.cpp's CPU path on a bf16 GGUF)
CLASSES = ("float32", "bfloat16", "float32+int8", "bfloat16+int8", "bfloat16+fp8")
E4M3_MAX, E4M3_EMAX = 448.0, 8


def _blocks(x: torch.Tensor) -> torch.Tensor:
    *lead, C = x.shape
    assert C % BLOCK == 0, f"activations of width {C} are not whole blocks of {BLOCK}"
    return x.float().reshape(*lead, C // BLOCK, BLOCK)


def q8_0(x: torch.Tensor) -> torch.Tensor:
    b = _blocks(x)
    d = b.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = torch.round(b * inv)  # quirk: ggml rounds half away from zero (roundf); torch.round halves to even. Ties
    # need x / d exactly k + 0.5, which random activations never hit; the block's amax itself maps to exactly 127
    return (q * d.half().float()).reshape(x.shape)


def mxfp8_e4m3(x: torch.Tensor) -> torch.Tensor:
    b = _blocks(x)
    amax = b.abs().amax(-1, keepdim=True)
    exp = torch.floor(torch.log2(torch.where(amax > 0, amax, torch.ones_like(amax)))) - E4M3_EMAX
    scale = torch.exp2(exp)
    e = (b / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float()
    return (e * scale).reshape(x.shape)


def split_class(name: str) -> tuple[str, str | None]:
    """"bfloat16+int8" -> ("bfloat16", "int8"); "float32" -> ("float32", None)."""
    dtype, _, activations = name.partition("+")
    return dtype, activations or None


ROUND = {"int8": q8_0, "fp8": mxfp8_e4m3}


def round_activations(x: torch.Tensor, activations: str) -> torch.Tensor:
    """x (..., C) in any float dtype -> the rounded values in float32, exactly (7 bits times a float16 scale, or
    E4M3 times a power of two, fit float32's 24; they would not fit bf16's 8: a kernel keeps them apart)."""
    return ROUND[activations](x)
