"""optimized/kernels/rms_norm.py: the one-kernel RMSNorm against its *_ref, optimized.norm's torch path (float32
math, one rounding to the activation dtype). Tolerance: one rounding step of the dtype (the float32 sum of
squares runs in another order). CPU: Triton interpreter in fp32/fp16, and bf16 allowing for its truncating
conversion. GPU: also bf16 and gpt-oss's width."""
import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES  # before optimized.kernels: the interpreter without CUDA
from optimized.kernels.rms_norm import rms_norm, rms_norm_ref


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 3, 2880), (5, 45), (4, 7, 1)])
def test_matches_ref(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(*shape, generator=g) * 3).to(dtype).to(DEVICE)
    scale = (torch.rand(shape[-1], generator=g) + 0.5).to(DEVICE)
    got, want = rms_norm(x, scale), rms_norm_ref(x, scale)
    assert got.shape == x.shape and got.dtype == dtype
    eps = torch.finfo(dtype).eps if dtype != torch.float32 else 1e-6
    torch.testing.assert_close(got, want, rtol=eps, atol=eps)


@pytest.mark.skipif(DEVICE != "cpu", reason="on a GPU, test_matches_ref runs bf16")
@pytest.mark.parametrize("shape", [(2, 3, 2880), (5, 45)])
def test_bf16_in_the_interpreter(shape):
    """bf16, the model's dtype, on CPU: the kernel has no dot, so only the interpreter's fp32 -> bf16 conversion
    differs from a GPU's (it truncates: one step of bf16 instead of half of one)."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(*shape, generator=g) * 3).to(torch.bfloat16)
    scale = torch.rand(shape[-1], generator=g) + 0.5
    got, want = rms_norm(x, scale), rms_norm_ref(x, scale)
    eps = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(got, want, rtol=2 * eps, atol=2 * eps)


def test_zero_rows_and_bad_input():
    scale = torch.ones(8, device=DEVICE)
    assert rms_norm(torch.zeros(0, 8, device=DEVICE), scale).shape == (0, 8)
    with pytest.raises(ValueError, match=r"scale \(7,\) for features 8"):
        rms_norm(torch.zeros(2, 8, device=DEVICE), scale[:7])
    with pytest.raises(ValueError, match="scale float32"):
        rms_norm(torch.zeros(2, 8, device=DEVICE), scale.half())
