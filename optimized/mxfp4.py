"""MXFP4 decoding in torch, for the MoE op: packed expert weights -> dense values of a few experts at a time.

Source: OCP Microscaling Formats (MX) v1.0; openai/gpt-oss gpt_oss/torch/weights.py. Format constants (FP4
values, block size, E8M0 bias, the NaN scale) are shared with reference/mxfp4.py; the decoding is written here.
  blocks uint8 (..., B, 16): two FP4 E2M1 codes per byte, quirk: LOW nibble first (element 2j = byte j & 0xF)
  scales uint8 (..., B):     E8M0, value = fp4 * 2**(scale - 127)
Decoding is exact in float32 and bfloat16 (FP4 has 2 significant bits; E8M0 is a power of two whose exponent
range bfloat16 shares with float32).
Not here: deciding which experts to decode (moe.py calls this per expert, or on the routed experts only).

Legend: B blocks of 32 values along the decoded axis.
"""
import torch

from reference.mxfp4 import BLOCK, FP4_VALUES, SCALE_BIAS, SCALE_NAN

_BYTE_LUT: dict[tuple, torch.Tensor] = {}


def byte_table(device, dtype) -> torch.Tensor:
    """(256, 2): the two FP4 values a byte holds, low nibble first. One gather decodes a byte."""
    key = (torch.device(device), dtype)
    if key not in _BYTE_LUT:
        fp4 = torch.tensor(FP4_VALUES, dtype=torch.float64)
        b = torch.arange(256)
        _BYTE_LUT[key] = torch.stack([fp4[b & 0x0F], fp4[b >> 4]], dim=-1).to(device=device, dtype=dtype)
    return _BYTE_LUT[key]


def scale_values(scales: torch.Tensor, dtype) -> torch.Tensor:
    """E8M0 uint8 -> 2**(s - 127) exactly (0xFF is refused at load, see checkpoint.py)."""
    s = scales.to(torch.int32)
    # E8M0 s is the float32 exponent field (same bias 127): bits s << 23; s = 0 is the subnormal 2**-127
    bits = torch.where(s == 0, torch.full_like(s, 1 << 22), s << 23)
    return bits.view(torch.float32).to(dtype)


def decode(blocks: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """blocks (..., B, 16) uint8, scales (..., B) uint8 -> (..., B*32) in dtype."""
    *lead, B, half = blocks.shape
    assert half == BLOCK // 2, f"MXFP4 blocks must have 16 bytes in the last axis, got {tuple(blocks.shape)}"
    assert tuple(scales.shape) == (*lead, B), f"scales {tuple(scales.shape)} do not match blocks {tuple(blocks.shape)}"
    assert blocks.dtype == torch.uint8 and scales.dtype == torch.uint8, (blocks.dtype, scales.dtype)
    table = byte_table(blocks.device, dtype)
    values = table.index_select(0, blocks.reshape(-1).int())  # (n, 2): a row gather, ~2x faster than table[idx]
    values = values.reshape(*lead, B, BLOCK) * scale_values(scales, dtype)[..., None]
    return values.reshape(*lead, B * BLOCK)


def matvec(blocks: torch.Tensor, scales: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Each of R packed matrices times its own vector, without decoding the matrix (the CPU decode path):
    blocks (R, O, B, 16), scales (R, O, B), x (R, B*32) float32 -> (R, O) float32.
    A byte j of block b multiplies x[b, 2j] by its low code and x[b, 2j+1] by its high code, so a 256-entry
    table per (b, j) holds every possible contribution; one embedding_bag then gathers and sums the 16 bytes of
    each block (reading 1 byte per 2 weights), and the E8M0 scale weights the block sums."""
    R, O, B, half = blocks.shape
    assert half == BLOCK // 2 and tuple(scales.shape) == (R, O, B) and tuple(x.shape) == (R, B * BLOCK)
    table = byte_table(x.device, torch.float32)  # (256, 2)
    x2 = x.float().reshape(R, B, half, 2)
    contrib = x2[..., 0:1] * table[:, 0] + x2[..., 1:2] * table[:, 1]  # (R, B, 16, 256)
    base = torch.arange(R * B * half, dtype=torch.int32, device=x.device).reshape(R, 1, B, half) * 256
    bags = blocks.int().add_(base).reshape(R * O * B, half)  # int32 rows into contrib, one bag per block
    # (widening first, then adding in place, is ~4x faster than the mixed-dtype broadcast add)
    sums = torch.nn.functional.embedding_bag(bags, contrib.reshape(-1, 1), mode="sum").reshape(R, O, B)
    return torch.einsum("rob,rob->ro", sums, scale_values(scales, torch.float32))


__all__ = ["BLOCK", "SCALE_BIAS", "SCALE_NAN", "byte_table", "decode", "matvec", "scale_values"]
