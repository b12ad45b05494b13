"""The CPU kernels for MXFP4 experts: a routed matvec and the MoE op straight from the packed bytes, in C (csrc/).

out[r] = W_{ids[r]} @ x[r] for the R routed rows of a decode step, reading each routed expert's packed blocks
and scales in place (no gather copy, nothing decoded to memory). Its *_ref is `matvec_ref` below
(optimized.mxfp4.matvec on the gathered experts), tested against it in tests/test_optimized_ops.py.
Build: csrc/mxfp4_matvec.c and csrc/mxfp4_matmul.c, compiled once by cbuild.py. Without a compiler
`available()` is False, the reason is in `unavailable_reason`, and moe.py keeps the torch path: slower, same
numbers within float32 rounding. The kernels run AVX-512F, AVX2 or scalar loops, the best the CPU reports
(`kernel_name`); `simd` caps the choice (tests force each).
`moe_decode` runs the whole MoE of a decode step (both matvecs, biases, SwiGLU, routing weights) in one call;
`moe_prefill` (csrc/mxfp4_matmul.c) the same for many tokens: rows grouped by expert, each hit expert's weights
decoded 4 rows at a time into an L1 tile and multiplied by all of its rows (one read of an expert per call).
Not here: routing (moe.py).

Legend: R routed rows, E experts, O output rows, B blocks of 32 along the input axis.
"""
import ctypes

import torch

from optimized import cbuild, mxfp4

SOURCE, PREFILL_SOURCE = "mxfp4_matvec.c", "mxfp4_matmul.c"
_P, _I64, _F32, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
SIGNATURES = {
    "mxfp4_routed_matvec": ([_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _INT, _INT], _INT),
    "mxfp4_moe_decode": ([_P, _P, _P, _P, _P, _P, _INT, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _F32, _F32,
                          _INT, _INT], _INT),
    "mxfp4_simd": ([_INT], _INT),
    "mxfp4_q8_level": ([_INT], _INT),
}
SIMD = ("scalar", "avx2", "avx512f")  # csrc/common.h's levels; simd=True: the best the CPU has, False: scalar
Q8_KERNELS = ("scalar int8", "avx2 int8", "avx512vnni int8")  # the int8 dots' kernels (mxfp4_q8_level)
PREFILL_SIGNATURES = {
    "mxfp4_moe_prefill": ([_P, _P, _P, _P, _P, _P, _INT, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _I64,
                           _F32, _F32, _INT, _INT], _INT),
}
PREFILL_CHUNK = 256  # an expert's rows per pass of moe_prefill: bounds its scratch (an expert with more is re-read)
_lib = _prefill_lib = None
unavailable_reason = None


def available() -> bool:
    global _lib, _prefill_lib, unavailable_reason
    if _lib is None and unavailable_reason is None:
        _lib, _prefill_lib = cbuild.load(SOURCE, SIGNATURES), cbuild.load(PREFILL_SOURCE, PREFILL_SIGNATURES)
        if _lib is None or _prefill_lib is None:
            unavailable_reason = cbuild.reasons[SOURCE if _lib is None else PREFILL_SOURCE]
            _lib = _prefill_lib = None
    return _lib is not None


def _cap(simd: bool | str) -> int:
    if isinstance(simd, bool):
        return len(SIMD) - 1 if simd else 0
    if simd not in SIMD:
        raise ValueError(f"simd must be a bool or one of {SIMD}, not {simd!r}")
    return SIMD.index(simd)


def kernel_name(simd: bool | str = True, int8: bool = False) -> str | None:
    """The vector path the MXFP4 kernels take on this CPU (capped at `simd`), or with int8=True the int8 dots'
    kernel (Q8_KERNELS: AVX-512 VNNI where the CPU has it at the avx512f level, else AVX2); None without the C
    kernels."""
    if not available():
        return None
    return Q8_KERNELS[_lib.mxfp4_q8_level(_cap(simd))] if int8 else SIMD[_lib.mxfp4_simd(_cap(simd))]


def routed_matvec(blocks: torch.Tensor, scales: torch.Tensor, ids: torch.Tensor, x: torch.Tensor,
                  out: torch.Tensor | None = None, simd: bool | str = True, int8: bool = False) -> torch.Tensor:
    """blocks (E, O, B, 16) uint8, scales (E, O, B) uint8, ids (R,) int64, x (R, B*32) float32, all contiguous
    on the CPU -> (R, O) float32 (written into `out` when given). simd caps the vector path (tests); int8: x in
    Q8_0, the int8 kernels (golden/activations.py's q8_0; the precision classes "+int8")."""
    E, O, B, half = blocks.shape
    (R,) = ids.shape
    assert half == 16 and tuple(scales.shape) == (E, O, B) and tuple(x.shape) == (R, B * 32), (
        blocks.shape, scales.shape, ids.shape, x.shape)
    assert blocks.dtype == scales.dtype == torch.uint8 and ids.dtype == torch.int64 and x.dtype == torch.float32
    for name, t in (("blocks", blocks), ("scales", scales), ("ids", ids), ("x", x)):
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"routed_matvec: {name} must be a contiguous CPU tensor ({t.device}, {t.stride()})")
    if not available():
        raise RuntimeError(f"the CPU MXFP4 kernel is unavailable: {unavailable_reason}")
    if out is None:
        out = torch.empty(R, O, dtype=torch.float32)
    assert tuple(out.shape) == (R, O) and out.dtype == torch.float32 and out.is_contiguous()
    scratch = torch.empty(32 * B, dtype=torch.float32)  # x in the decode's order, or its Q8_0 form
    rc = _lib.mxfp4_routed_matvec(blocks.data_ptr(), scales.data_ptr(), ids.data_ptr(), x.data_ptr(),
                                  out.data_ptr(), scratch.data_ptr(), R, E, O, B, int(int8), _cap(simd))
    if rc != 0:
        raise IndexError(f"routed_matvec: an expert id in {ids.tolist()} is outside [0, {E})")
    return out


def _check_moe(op, x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2):
    """The arguments of moe_decode / moe_prefill (same contract) -> (N, A, E, I, C)."""
    N, C = x.shape
    E, I2, B1, _ = w1_blocks.shape
    I, A = I2 // 2, ids.shape[1]
    assert tuple(ids.shape) == tuple(weights.shape) == (N, A) and B1 * 32 == C and I % 32 == 0
    assert tuple(w2_blocks.shape) == (E, C, I // 32, 16) and tuple(b1.shape) == (E, I2) and tuple(b2.shape) == (E, C)
    assert b1.dtype == b2.dtype and b1.dtype in (torch.float32, torch.bfloat16), (b1.dtype, b2.dtype)
    args = dict(x=x, ids=ids, weights=weights, w1_blocks=w1_blocks, w1_scales=w1_scales, b1=b1, w2_blocks=w2_blocks,
                w2_scales=w2_scales, b2=b2)
    want = dict(x=torch.float32, ids=torch.int32, weights=torch.float32)
    for name, t in args.items():
        if t.device.type != "cpu" or not t.is_contiguous() or (name in want and t.dtype != want[name]):
            of = f" of {want[name]}" if name in want else ""
            raise ValueError(f"{op}: {name} must be a contiguous CPU tensor{of} ({t.dtype}, {t.stride()})")
    if not available():
        raise RuntimeError(f"the CPU MXFP4 kernel is unavailable: {unavailable_reason}")
    return N, A, E, I, C


def moe_decode(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float, alpha: float,
               simd: bool | str = True, int8: bool = False) -> torch.Tensor:
    """The MoE op for a few tokens in one C call (matvecs, biases, SwiGLU, routing weights): x (N, C) float32,
    ids (N, A) int32, weights (N, A) float32, packed experts as in moe.py, biases float32 or bfloat16
    -> (N, C) float32. Its *_ref is the torch op (moe.py with the C kernel switched off). int8: both matvecs'
    inputs in Q8_0 and integer block dots (llama.cpp's CPU MXFP4 path; the classes "+int8")."""
    N, A, E, I, C = _check_moe("moe_decode", x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2)
    out = torch.empty(N, C, dtype=torch.float32)
    scratch = torch.empty(C + A * (4 * I + C), dtype=torch.float32)  # csrc/mxfp4_matvec.c's layout
    rc = _lib.mxfp4_moe_decode(w1_blocks.data_ptr(), w1_scales.data_ptr(), b1.data_ptr(), w2_blocks.data_ptr(),
                               w2_scales.data_ptr(), b2.data_ptr(), int(b1.dtype == torch.bfloat16), ids.data_ptr(),
                               weights.data_ptr(), x.data_ptr(), out.data_ptr(), scratch.data_ptr(), N, A, E, I, C,
                               float(limit), float(alpha), int(int8), _cap(simd))
    if rc != 0:
        raise IndexError(f"moe_decode: an expert id in {ids.tolist()} is outside [0, {E})")
    return out


def moe_prefill(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float, alpha: float,
                simd: bool | str = True, int8: bool = False) -> torch.Tensor:
    """moe_decode's contract for many tokens: each hit expert is decoded once per call (per PREFILL_CHUNK of its
    rows), a tile of 4 rows at a time, and multiplied by all of its rows. Its *_ref is the torch op (moe.py's
    expert-by-expert loop). int8: both matmuls' inputs in Q8_0, integer dots on tiles of int8 weights (AVX2 or
    AVX-512 VNNI; on other CPUs the Q8_0 values through the float tiles), a token's products bitwise its
    moe_decode's."""
    N, A, E, I, C = _check_moe("moe_prefill", x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2)
    out = torch.empty(N, C, dtype=torch.float32)
    chunk = max(1, min(N * A, PREFILL_CHUNK))
    work = torch.empty(2 * (E + 1) + N * A, dtype=torch.int32)  # the counting sort of the routed rows by expert
    # x, h, act, y of a chunk; a row; the biases as float32; int8: each token's Q8_0 x (csrc/q8.h: 13 floats a
    # block of 32). Each thread's tile lives on its stack.
    q8 = N * 13 * C // 32 if int8 else 0
    scratch = torch.empty(chunk * (2 * C + 3 * I) + 3 * I + C + q8, dtype=torch.float32)
    rc = _prefill_lib.mxfp4_moe_prefill(w1_blocks.data_ptr(), w1_scales.data_ptr(), b1.data_ptr(),
                                        w2_blocks.data_ptr(), w2_scales.data_ptr(), b2.data_ptr(),
                                        int(b1.dtype == torch.bfloat16), ids.data_ptr(), weights.data_ptr(),
                                        x.data_ptr(), out.data_ptr(), work.data_ptr(), scratch.data_ptr(), chunk, N,
                                        A, E, I, C, float(limit), float(alpha), int(int8), _cap(simd))
    if rc != 0:
        raise IndexError(f"moe_prefill: an expert id in {ids.tolist()} is outside [0, {E})")
    return out


def matvec_ref(blocks, scales, ids, x) -> torch.Tensor:
    """The kernel's reference: gather the routed experts, then the torch packed matvec."""
    e = ids.long()
    return mxfp4.matvec(blocks.index_select(0, e), scales.index_select(0, e), x.float())


__all__ = ["available", "matvec_ref", "moe_decode", "moe_prefill", "routed_matvec", "unavailable_reason"]
