"""Dense projections (qkv, out, router, unembedding): torch's linear, except a single row on CPU.

One row (batch-1 decode) on CPU:
  - bfloat16: csrc/bf16_matvec.c (built by cbuild.py): AVX512_BF16 dot products, or (CPUs without them) the
    weights widened in AVX-512F/AVX2 registers, float32 sums; the kernel is picked by what the CPU reports
    (`kernel_name`). torch 2.13's CPU bf16 mv costs ~28 us for the 32x768 router (4 us in float32) and is
    compute-bound even on cached matrices; the kernel leaves only the weight reads (bench/engine_cpu.py);
  - float32 (or no C compiler): torch.mv / torch.addmv, ~1.2x faster than linear's matmul path at one row.
Same math everywhere: products summed in float32, bias added, one rounding to the dtype.
A float32 model on CPU keeps the matrices its checkpoint stores in bf16 (the release format) in bf16
(checkpoint.placed_dtype): widening bf16 to float32 is exact, so the numbers are the float32 model's and a decode
step reads half the bytes. Up to KERNEL_ROWS rows: csrc/bf16_matvec.c's bf16_f32_matmul (weights widened in
registers, float32 x and sums); more rows: F.linear on float32 copies of WIDEN_BYTES of rows at a time.
`project` is what the blocks call: a backend's fused projection (ops.linear: RMSNorm before, residual add after,
in one kernel) where it has one, else the RMSNorm, `linear` and the add as steps.
Not here: the packed MXFP4 experts (moe.py, mxfp4_cpu.py).

Legend: C input features, O output features.
"""
import ctypes
import functools

import torch

from optimized import cbuild
from optimized.norm import norm_for

SOURCE = "bf16_matvec.c"
_P, _I64 = ctypes.c_void_p, ctypes.c_int64
SIGNATURES = {"bf16_matvec": ([_P, _P, _P, _P, _P, _I64, _I64, ctypes.c_int], None),
              "bf16_f32_matmul": ([_P, _P, _P, _P, _P, _I64, _I64, _I64, ctypes.c_int], None),
              "bf16_kernel_name": ([ctypes.c_int, ctypes.c_int, _I64], ctypes.c_char_p)}
KERNELS = ("scalar", "avx2", "avx512f", "avx512bf16")  # the C kernels, by level: a call runs the best one at or
# below its `kernel` cap that the CPU reports (cpuid); "auto" caps nothing
WIDEN_BYTES = 4 * 2**20  # the float32 copy of bf16-stored weight rows a many-row product widens at once: small
# enough to stay in cache for the matmul that reads it. 20b's qkv (5120 x 2880) at 32 rows of x, two Zen 3 cores:
# 4096-row chunks (47 MB) 32 ms, 512 rows 11 ms, 256 rows 11 ms (prefill 128: 60 / 31 / 26); mid's 768-wide: same
KERNEL_ROWS = 16  # x rows up to which bf16-stored weights go to the C kernel (weights read once, 4 rows in L1
# while every x row passes); beyond, widened copies and torch's sgemm (compute-bound prefill)


def _bf16_lib():
    return cbuild.load(SOURCE, SIGNATURES)


def _level(kernel: str) -> int:
    if kernel == "auto":
        return len(KERNELS) - 1
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, not {kernel!r}")
    return KERNELS.index(kernel)


def kernel_name(op: str = "bf16_matvec", C: int = 768, kernel: str = "auto") -> str | None:
    """The kernel `op` ("bf16_matvec": bf16 x; "bf16_f32_matmul": float32 x) runs for C input features on this
    CPU, capped at `kernel`; None without the C kernels (torch paths)."""
    lib = _bf16_lib()
    if lib is None:
        return None
    return lib.bf16_kernel_name(_level(kernel), int(op == "bf16_matvec"), C).decode()


@functools.cache
def _cpu_bf16_dot() -> bool:
    """Whether this CPU has AVX512_BF16 (and the C kernels are built): torch's CPU bf16 matmul is fast only there."""
    return kernel_name("bf16_matvec", 32) == "avx512bf16"


def bf16_matvec(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None = None, kernel: str = "auto") -> torch.Tensor:
    """w (O, C), x (C,), b (O,) or None, bfloat16 contiguous on the CPU -> (O,) float32 (the C kernel; `kernel`
    caps which one: tests force each)."""
    O, C = w.shape
    assert tuple(x.shape) == (C,) and (b is None or tuple(b.shape) == (O,)), (w.shape, x.shape)
    for name, t in (("w", w), ("x", x), ("b", b)):
        if t is not None and (t.dtype != torch.bfloat16 or t.device.type != "cpu" or not t.is_contiguous()):
            raise ValueError(f"bf16_matvec: {name} must be a contiguous bfloat16 CPU tensor "
                             f"({t.dtype}, {t.device}, strides {t.stride()})")
    lib = _bf16_lib()
    if lib is None:
        raise RuntimeError(f"the CPU bf16 kernel is unavailable: {cbuild.reasons[SOURCE]}")
    out = torch.empty(O, dtype=torch.float32)
    scratch = torch.empty(2 * C, dtype=torch.float32)  # x widened, and its even and odd columns
    lib.bf16_matvec(w.data_ptr(), x.data_ptr(), None if b is None else b.data_ptr(), out.data_ptr(),
                    scratch.data_ptr(), O, C, _level(kernel))
    return out


def bf16_f32_matmul(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None = None,
                    kernel: str = "auto") -> torch.Tensor:
    """w (O, C) bfloat16, x (N, C) float32, b (O,) float32 or None, contiguous on the CPU -> (N, O) float32: the
    float32 product with the weights widened in registers (the C kernel; `kernel` caps which one)."""
    O, C = w.shape
    N = x.shape[0]
    assert tuple(x.shape) == (N, C) and (b is None or tuple(b.shape) == (O,)), (w.shape, x.shape)
    for name, t, dt in (("w", w, torch.bfloat16), ("x", x, torch.float32), ("b", b, torch.float32)):
        if t is not None and (t.dtype != dt or t.device.type != "cpu" or not t.is_contiguous()):
            raise ValueError(f"bf16_f32_matmul: {name} must be a contiguous {dt} CPU tensor "
                             f"({t.dtype}, {t.device}, strides {t.stride()})")
    lib = _bf16_lib()
    if lib is None:
        raise RuntimeError(f"the CPU bf16 kernel is unavailable: {cbuild.reasons[SOURCE]}")
    out = torch.empty(N, O, dtype=torch.float32)
    scratch = torch.empty(N * C, dtype=torch.float32)  # x's even and odd columns
    lib.bf16_f32_matmul(w.data_ptr(), x.data_ptr(), None if b is None else b.data_ptr(), out.data_ptr(),
                        scratch.data_ptr(), O, C, N, _level(kernel))
    return out


def _linear_widened(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """float32 x times bf16-stored w. Few rows on CPU: the C kernel. Otherwise exact float32 copies of WIDEN_BYTES of
    rows of w at a time (an output column depends on its own row of w only: chunking changes no number)."""
    O, C = w.shape
    v = x.reshape(-1, C)
    if v.shape[0] <= KERNEL_ROWS and x.device.type == "cpu" and w.is_contiguous() and _bf16_lib() is not None:
        y = bf16_f32_matmul(w, v.contiguous(), None if b is None else b.float().contiguous())
        return y.reshape(*x.shape[:-1], O)
    out = torch.empty(v.shape[0], O, dtype=torch.float32, device=x.device)
    rows = max(16, WIDEN_BYTES // (4 * C)) if x.device.type == "cpu" else O  # a GPU: one copy, one launch
    for o in range(0, O, rows):
        bo = None if b is None else b[o:o + rows].float()
        out[:, o:o + rows] = torch.nn.functional.linear(v, w[o:o + rows].float(), bo)
    return out.reshape(*x.shape[:-1], O)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., C), w (O, C), b (O,) or None -> (..., O). A bf16 w with a float32 x is a float32 model's
    bf16-stored matrix (exact widening, float32 result)."""
    O, C = w.shape
    assert x.shape[-1] == C and (b is None or tuple(b.shape) == (O,)), (x.shape, w.shape, b is None or b.shape)
    if x.dtype == torch.float32 and w.dtype == torch.bfloat16:
        return _linear_widened(x, w, b)
    if x.device.type == "cpu" and x.numel() > C and x.dtype == w.dtype == torch.bfloat16 and not _cpu_bf16_dot():
        # several bf16 rows (prefill) on a CPU without AVX512_BF16, where torch 2.13's bf16 matmul runs ~8x slower
        # than float32's (bench/engine_cpu.py): the same exact products and float32 sums on widened copies, bias
        # added in float32, one rounding to bf16, as torch's bf16 linear does
        return _linear_widened(x.float(), w, b).to(torch.bfloat16)
    if x.device.type == "cpu" and x.numel() == C:
        v = x.reshape(C)
        if (w.dtype == v.dtype == torch.bfloat16 and (b is None or b.dtype == torch.bfloat16) and w.is_contiguous()
                and _bf16_lib() is not None):
            y = bf16_matvec(w, v.contiguous(), b).to(torch.bfloat16)
        else:
            y = torch.mv(w, v) if b is None else torch.addmv(b, w, v)
        return y.reshape(*x.shape[:-1], O)
    return torch.nn.functional.linear(x, w, b)


def project(ops, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, residual=None, norm_scale=None):
    """[residual +] linear(rms_norm(x, norm_scale) if given else x, w, b): the backend's fused op where it has one
    (ops.linear: the Triton backend's kernels/linear.py, one launch at decode), else these steps."""
    fused = getattr(ops, "linear", None)
    if fused is not None:
        return fused(x, w, b, residual=residual, norm_scale=norm_scale)
    t = x if norm_scale is None else norm_for(ops)(x, norm_scale)
    y = linear(t, w, b)
    return y if residual is None else residual + y
