"""optimized/kernels/linear.py: the decode projections ([residual +] rms_norm?(x) @ W.T + b in one kernel) against
linear_ref, the torch steps they replace.

Tolerance (STYLE.md 9): the kernel's error against a float64 evaluation of the same op at most 4x linear_ref's
error in the same dtype, plus a small atol times the output's scale. CPU: the Triton interpreter in fp32/fp16 (and
a float32 x with bf16-stored weights, as a float32 model keeps them); GPU: also bf16."""
import importlib

import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES, needs_cuda  # before optimized.kernels: the interpreter switch
from optimized.kernels.linear import linear, linear_ref
from reference.norm import EPS

kernels_linear = importlib.import_module("optimized.kernels.linear")
tuning = importlib.import_module("optimized.kernels.tuning")
ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def gold(x, w, b, residual, norm_scale):
    """float64, no rounding in between."""
    t = x.double()
    if norm_scale is not None:
        t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + EPS) * norm_scale.double()
    y = t @ w.double().T + (0 if b is None else b.double())
    return y if residual is None else residual.double() + y


def make(N, C, O, dtype, w_dtype, seed, bias=True, res=True, norm=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, C, generator=g) * 2).to(dtype).to(DEVICE)
    w = (torch.randn(O, C, generator=g) * C ** -0.5).to(w_dtype).to(DEVICE)
    b = (torch.randn(O, generator=g) * 0.1).to(w_dtype).to(DEVICE) if bias else None
    r = torch.randn(N, O, generator=g).to(dtype).to(DEVICE) if res else None
    s = (1 + 0.1 * torch.randn(C, generator=g)).to(DEVICE) if norm else None
    return x, w, b, r, s


def check(N, C, O, dtype, w_dtype=None, seed=0, **kw):
    x, w, b, r, s = make(N, C, O, dtype, w_dtype or dtype, seed, **kw)
    out = linear(x, w, b, residual=r, norm_scale=s)
    assert out.shape == (N, O) and out.dtype == dtype
    base = linear_ref(x, w, b, residual=r, norm_scale=s)
    want = gold(x, w, b, r, s)
    err = (out.double() - want).abs().max().item()
    base_err = (base.double() - want).abs().max().item()
    scale = max(1.0, want.abs().max().item())
    assert err <= 4 * base_err + ATOL[dtype] * scale, (err, base_err, scale)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("N,C,O", [(1, 64, 40), (3, 96, 33), (4, 160, 8), (1, 2880 // 8, 128)])
@pytest.mark.parametrize("fused", ["norm+bias+res", "bias+res", "norm", "plain"])
def test_linear_matches_ref(N, C, O, dtype, fused, monkeypatch):
    """Whole steps and a tail of features (BLOCK_C = 32: C = 96 is 3 steps, 160 five, 360 eleven and a tail), rows
    that do and do not fill the last block of outputs, each fusion on and off."""
    monkeypatch.setattr(tuning, "LINEAR_CONFIG", dict(tuning.LINEAR_CONFIG, BLOCK_C=32))
    check(N, C, O, dtype, seed=N + C + O, bias="bias" in fused, res="res" in fused, norm="norm" in fused)


def test_linear_float32_x_with_bf16_weights():
    """A float32 model keeps its bf16-stored matrices in bf16 (checkpoint.placed_dtype): widened exactly, fp32 out."""
    check(2, 96, 40, torch.float32, torch.bfloat16, seed=3)


def test_linear_many_rows_take_the_torch_steps():
    """Beyond LINEAR_MAX_ROWS the op is the torch steps (cuBLAS on a GPU): the same numbers as linear_ref up to the
    norm kernel's order of sums."""
    out = check(kernels_linear.LINEAR_MAX_ROWS + 3, 64, 24, torch.float32, seed=4)
    assert out.shape == (kernels_linear.LINEAR_MAX_ROWS + 3, 24)


@pytest.mark.parametrize("fused", ["norm+bias", "bias+res"])
def test_linear_rows_do_not_depend_on_the_batch(fused):
    """Each row of x is computed by its own programs with the same code whatever the other rows (batch-invariant):
    the kernel at LINEAR_MAX_ROWS rows gives each row bitwise what it gives that row alone."""
    N = kernels_linear.LINEAR_MAX_ROWS
    x, w, b, r, s = make(N, 96, 40, torch.float32, torch.float32, seed=7, res="res" in fused, norm="norm" in fused)
    out = linear(x, w, b, residual=r, norm_scale=s)
    for n in range(N):
        alone = linear(x[n:n + 1], w, b, residual=None if r is None else r[n:n + 1], norm_scale=s)
        assert torch.equal(out[n:n + 1], alone), n


def test_linear_leading_dims_and_empty():
    x, w, b, r, s = make(3, 64, 16, torch.float32, torch.float32, seed=5)
    out = linear(x.reshape(1, 3, 64), w, b, residual=r.reshape(1, 3, 16), norm_scale=s)
    assert out.shape == (1, 3, 16)
    torch.testing.assert_close(out.reshape(3, 16), linear(x, w, b, residual=r, norm_scale=s), rtol=0, atol=0)
    assert linear(x[:0], w, b).shape == (0, 16)


def test_linear_bad_input():
    x, w, b, r, s = make(2, 64, 16, torch.float32, torch.float32, seed=6)
    with pytest.raises(ValueError, match="w must be"):
        linear(x, w[:, :32], b)
    with pytest.raises(ValueError, match="b must be"):
        linear(x, w, b[:8])
    with pytest.raises(ValueError, match="residual"):
        linear(x, w, b, residual=r[:, :8])
    with pytest.raises(ValueError, match="norm_scale"):
        linear(x, w, b, norm_scale=s.half())
    with pytest.raises(ValueError, match="dtype"):
        linear(x.half(), w, b)


@needs_cuda
@pytest.mark.parametrize("C,O", [(2880, 5120), (4096, 2880), (2880, 32), (2880, 128)])
def test_linear_real_shapes_bf16(C, O):
    """gpt-oss's qkv, out and router (20b, 120b) projections in bf16 at batch 1 and 4."""
    for N in (1, 4):
        check(N, C, O, torch.bfloat16, seed=C + O + N, res=O == 2880, norm=O != 2880)
