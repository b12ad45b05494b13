"""reference/mxfp4.py against the OCP MX v1.0 spec written out by hand: FP4 E2M1 codes, E8M0 scales,
the checkpoint layout (blocks (..., B, 16) -> (..., B*32), low nibble first), and the encoder round trip."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import mxfp4

# OCP MX v1.0, FP4 E2M1 (sign | 2 exponent bits, bias 1 | 1 mantissa bit), magnitudes of codes 0b000..0b111
E2M1_MAGNITUDE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def fp4_from_table(code: int) -> float:
    return -E2M1_MAGNITUDE[code & 7] if code & 8 else E2M1_MAGNITUDE[code & 7]


def fp4_from_bits(code: int) -> float:
    """The same value decoded from the bit fields, as a second independent formulation."""
    sign = -1.0 if code >> 3 else 1.0
    exp, man = (code >> 1) & 3, code & 1
    mag = 0.5 * man if exp == 0 else 2.0 ** (exp - 1) * (1.0 + 0.5 * man)  # exp 0: subnormal
    return sign * mag


def test_hand_table_matches_bit_fields():
    for code in range(16):
        assert fp4_from_table(code) == fp4_from_bits(code)
        assert mxfp4.FP4_VALUES[code] == fp4_from_table(code)
        assert np.signbit(mxfp4.FP4_VALUES[code]) == bool(code & 8)  # code 8 is -0.0


def test_every_byte_decodes_to_low_then_high_nibble():
    blocks = np.arange(256, dtype=np.uint8).reshape(16, 16)  # 16 blocks holding every byte once
    scales = np.full(16, 127, dtype=np.uint8)  # 2**0
    out = mxfp4.decode(blocks, scales)
    assert out.shape == (512,) and out.dtype == np.float64
    for byte in range(256):
        b, j = divmod(byte, 16)
        lo, hi = out[b * 32 + 2 * j], out[b * 32 + 2 * j + 1]
        assert lo == fp4_from_table(byte & 0xF), byte
        assert hi == fp4_from_table(byte >> 4), byte
        assert np.signbit(lo) == bool(byte & 0x8) and np.signbit(hi) == bool(byte & 0x80), byte


def test_every_e8m0_scale():
    byte = 0x72  # low nibble code 2 (+1.0), high nibble code 7 (+6.0)
    scales = np.arange(255, dtype=np.uint8)
    blocks = np.full((255, 16), byte, dtype=np.uint8)
    out = mxfp4.decode(blocks, scales).reshape(255, 32)
    for s in range(255):
        unit = math.ldexp(1.0, s - 127)  # 2**(s - 127), exact in float64 for 0..254
        assert np.all(out[s, 0::2] == 1.0 * unit), s
        assert np.all(out[s, 1::2] == 6.0 * unit), s


def test_scale_0xff_is_nan_not_a_number():
    out = mxfp4.decode(np.full((2, 16), 0x22, dtype=np.uint8), np.array([127, 0xFF], dtype=np.uint8))
    assert np.all(out[:32] == 1.0)
    assert np.all(np.isnan(out[32:]))  # the spec's NaN; checkpoint.expert refuses it (test_ref_checkpoint.py)


def test_layout_with_leading_axes():
    rng = np.random.default_rng(0)
    E, R, B = 2, 3, 2
    blocks = rng.integers(0, 256, size=(E, R, B, 16), dtype=np.uint8)
    scales = rng.integers(120, 135, size=(E, R, B), dtype=np.uint8)
    out = mxfp4.decode(blocks, scales)
    assert out.shape == (E, R, B * 32)
    for e in range(E):
        for r in range(R):
            for b in range(B):
                unit = 2.0 ** (int(scales[e, r, b]) - 127)
                for j in range(16):
                    byte = int(blocks[e, r, b, j])
                    assert out[e, r, b * 32 + 2 * j] == fp4_from_bits(byte & 0xF) * unit
                    assert out[e, r, b * 32 + 2 * j + 1] == fp4_from_bits(byte >> 4) * unit


def test_decode_rejects_wrong_shapes_and_dtypes():
    with pytest.raises(AssertionError, match="16 bytes"):
        mxfp4.decode(np.zeros((2, 8), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(AssertionError, match="do not match"):
        mxfp4.decode(np.zeros((2, 16), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(AssertionError):
        mxfp4.decode(np.zeros((2, 16), np.int16), np.zeros(2, np.uint8))


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 3), st.data())
def test_encode_decode_round_trip(rows, B, data):
    codes = np.array(data.draw(st.lists(st.integers(0, 15), min_size=rows * B * 32, max_size=rows * B * 32)),
                     dtype=np.uint8).reshape(rows, B * 32)
    scales = np.array(data.draw(st.lists(st.integers(0, 254), min_size=rows * B, max_size=rows * B)),
                      dtype=np.uint8).reshape(rows, B)
    values = np.empty((rows, B * 32))
    for r in range(rows):
        for i in range(B * 32):
            values[r, i] = fp4_from_table(int(codes[r, i])) * 2.0 ** (int(scales[r, i // 32]) - 127)
    blocks = mxfp4.encode(values, scales)
    assert blocks.shape == (rows, B, 16) and blocks.dtype == np.uint8
    expect = (codes[:, 0::2] | (codes[:, 1::2] << 4)).reshape(rows, B, 16)  # low nibble first, signed zeros kept
    assert np.array_equal(blocks, expect)
    back = mxfp4.decode(blocks, scales)
    assert np.array_equal(back, values) and np.array_equal(np.signbit(back), np.signbit(values))


def test_encode_refuses_unrepresentable_and_non_finite():
    scales = np.array([127], dtype=np.uint8)
    v = np.zeros(32)
    v[5] = 2.5  # between 2 and 3: not an E2M1 value
    with pytest.raises(ValueError, match="not representable"):
        mxfp4.encode(v, scales)
    v[5] = np.inf
    with pytest.raises(ValueError, match="finite"):
        mxfp4.encode(v, scales)
