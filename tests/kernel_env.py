"""What the Triton kernel tests share. Import it before any optimized.kernels module: without CUDA it switches the
Triton interpreter on (chosen when a kernel is defined, at import), so kernels run on CPU tensors.
DTYPES: on CPU (the interpreter) float32 and float16: its tl.dot on bf16 is wrong and its fp32 -> bf16 conversion
truncates instead of rounding (seen with triton 3.6 and 3.9; kernels without a bf16 dot can still be checked in bf16
with that allowed for, as test_kernels_moe.py does); on a GPU float32 and bfloat16 (float16 would add compile time,
not coverage)."""
import pytest
import torch

from optimized.interpreter import interpret_on_cpu

interpret_on_cpu()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if DEVICE == "cuda" else [torch.float32, torch.float16]
DTYPE_IDS = [str(d).removeprefix("torch.") for d in DTYPES]
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU (bf16, real shapes, CUDA graphs)")
