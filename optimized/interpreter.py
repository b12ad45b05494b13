"""The Triton interpreter switch, in one place: kernels on CPU tensors run only in the Triton interpreter.

Triton reads TRITON_INTERPRET when a kernel is defined (at import), so the switch must be set before triton is
first imported, by optimized.kernels or by anything else (transformers imports triton too). Its callers:
optimized/kernels/__init__.py (before the kernel modules), tests/conftest.py and tests/kernel_env.py (before any
test module), bench/gpu.py (--smoke: CPU tensors, even on a machine with CUDA). It never overrides a value already
set (TRITON_INTERPRET=0 compiles for a GPU without one: tests/test_kernels_compile.py, bench/sass_roofline.py), and
it changes nothing where CUDA is available unless asked.
"""
import os


def interpret_on_cpu(cpu: bool | None = None) -> None:
    """TRITON_INTERPRET=1 unless already set, when the kernels will see CPU tensors: cpu, or by default when torch
    has no CUDA device."""
    if cpu is None:
        import torch
        cpu = not torch.cuda.is_available()
    if cpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
