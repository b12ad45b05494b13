"""MXFP4 decoding: the packed format of gpt-oss's MoE expert weights.

Source: OCP Microscaling Formats (MX) v1.0 spec; openai/gpt-oss gpt_oss/torch/weights.py.
A block is 32 FP4 (E2M1) values sharing one E8M0 scale. In the checkpoint:
  blocks: uint8 (..., N/32, 16)  two codes per byte, quirk: LOW nibble first (element 2j = byte j & 0xF)
  scales: uint8 (..., N/32)      value = fp4 * 2**(scale - 127)  (E8M0, bias 127; 0xFF is NaN per the spec)
Decoding is exact in float64 (and in bfloat16/float32 for the exponents gpt-oss uses).
Not here: encoding policy (how a quantizer picks scales); `encode` below is only the exact inverse for tests
and synthetic checkpoints.
"""
import numpy as np

# E2M1: sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0; code 0b0001 is the subnormal 0.5.
FP4_VALUES = np.array([+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
                       -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float64)
BLOCK = 32  # values per scale
SCALE_BIAS = 127
SCALE_NAN = 0xFF


def decode(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """blocks (..., B, 16) uint8, scales (..., B) uint8 -> float64 (..., B*32)."""
    *lead, B, half = blocks.shape
    assert half == BLOCK // 2, f"MXFP4 blocks must have 16 bytes in the last axis, got {blocks.shape}"
    assert scales.shape == (*lead, B), f"scales {scales.shape} do not match blocks {blocks.shape}"
    assert blocks.dtype == np.uint8 and scales.dtype == np.uint8, (blocks.dtype, scales.dtype)
    blocks = np.asarray(blocks)
    codes = np.empty((*lead, B, BLOCK), dtype=np.uint8)
    codes[..., 0::2] = blocks & 0x0F  # quirk: low nibble is the EARLIER element
    codes[..., 1::2] = blocks >> 4
    s = np.asarray(scales).astype(np.int32)
    mult = np.where(s == SCALE_NAN, np.nan, np.ldexp(1.0, s - SCALE_BIAS))  # (..., B)
    return (FP4_VALUES[codes] * mult[..., None]).reshape(*lead, B * BLOCK)


def encode(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of decode for values that are exactly representable: values (..., B*32), scales (..., B) -> blocks."""
    *lead, N = values.shape
    B = N // BLOCK
    assert N % BLOCK == 0 and scales.shape == (*lead, B), (values.shape, scales.shape)
    if not np.all(np.isfinite(values)):
        raise ValueError("encode: values must be finite")
    v = values.reshape(*lead, B, BLOCK) / np.ldexp(1.0, scales.astype(np.int32) - SCALE_BIAS)[..., None]
    codes = np.empty(v.shape, dtype=np.uint8)
    for code, fv in enumerate(FP4_VALUES):
        hit = (v == fv) & (np.signbit(v) == np.signbit(fv))
        codes[hit] = code
        v = np.where(hit, np.nan, v)
    if not np.all(np.isnan(v)):
        raise ValueError("encode: some values are not representable in FP4 E2M1 at the given scales")
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
