"""optimized/ ops against reference/ functions, op by op, on small random inputs (hypothesis).

Bounds: float32 ops are compared with the float64 reference at rtol/atol ~1e-5 (float32 epsilon 1.2e-7 times
the depth of the sums here, with margin); MXFP4 decoding and routing ids are exact.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimized import mxfp4, mxfp4_cpu, ops, rope
from optimized.moe import moe, route, swiglu
from optimized.norm import rms_norm
from reference import attention as ref_attn
from reference import moe as ref_moe
from reference import mxfp4 as ref_mxfp4
from reference import norm as ref_norm
from reference import rope as ref_rope

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared 2-core machine
seeds = st.integers(0, 2**31 - 1)


def _needs_c_kernels():
    """The C kernels (optimized/csrc) need a C compiler; with one, a failed build is a failure, not a skip."""
    import shutil
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the engine runs its torch paths (tested above)")
    assert mxfp4_cpu.available(), mxfp4_cpu.unavailable_reason


MXFP4_SIMD = ["scalar", "avx2", "avx512f"]  # mxfp4_cpu.SIMD: each test forces each path the CPU has


def _simd_or_skip(simd):
    _needs_c_kernels()
    if mxfp4_cpu.kernel_name(simd) != simd:
        pytest.skip(f"this CPU has no {simd} (cpuid)")


@settings(max_examples=20)
@given(seeds, st.integers(1, 4), st.sampled_from([torch.float32, torch.bfloat16]))
def test_mxfp4_decode_exact(seed, nblocks, dtype):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (3, nblocks, 16), dtype=np.uint8)
    scales = rng.integers(100, 140, (3, nblocks), dtype=np.uint8)
    scales[0, 0] = 0  # the subnormal scale 2**-127
    got = mxfp4.decode(torch.from_numpy(blocks), torch.from_numpy(scales), dtype)
    assert got.dtype == dtype and got.shape == (3, nblocks * 32)
    np.testing.assert_array_equal(got.double().numpy(), ref_mxfp4.decode(blocks, scales))


@settings(max_examples=20)
@given(seeds, st.sampled_from([1, 3, 70]), st.sampled_from([32, 64, 45]), st.booleans())
def test_rms_norm(seed, T, C, kernel):
    """Both paths (the C kernel for <= 64 CPU rows, torch's op) against the float64 reference."""
    rng = np.random.default_rng(seed)
    x, scale = rng.standard_normal((T, C)) * 3, rng.standard_normal(C)
    got = rms_norm(torch.tensor(x, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32), kernel=kernel)
    assert got.dtype == torch.float32 and got.shape == (T, C)
    np.testing.assert_allclose(got.double().numpy(), ref_norm.rms_norm(x.astype(np.float32).astype(np.float64),
                               scale.astype(np.float32).astype(np.float64)), rtol=1e-5, atol=1e-5)


@settings(max_examples=20)
@given(seeds, st.sampled_from([1, 5]), st.sampled_from([64, 45]))
def test_cpu_kernel_rms_norm_bf16_vs_torch(seed, T, C):
    """bf16 rows: the C kernel against torch's op on the same bf16 values (float32 math, one rounding each:
    at most one bf16 step apart where the float32 results straddle a rounding boundary)."""
    from optimized import cbuild, norm
    if cbuild.load(norm.SOURCE, norm.SIGNATURES) is None:
        pytest.skip(f"no C kernel: {cbuild.reasons[norm.SOURCE]}")
    g = torch.Generator().manual_seed(seed)
    x, scale = (torch.randn(T, C, generator=g) * 3).bfloat16(), torch.randn(C, generator=g)
    got, want = rms_norm(x, scale), rms_norm(x, scale, kernel=False)
    assert got.dtype == torch.bfloat16 and got.shape == (T, C)
    torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -7, atol=0)


@settings(max_examples=20)
@given(seeds, st.floats(0.5, 10))
def test_swiglu(seed, limit):
    h = np.random.default_rng(seed).standard_normal((5, 16)) * 6  # crosses the clamps
    h32 = h.astype(np.float32).astype(np.float64)
    got = swiglu(torch.tensor(h32, dtype=torch.float32), limit)
    np.testing.assert_allclose(got.double().numpy(), ref_moe.swiglu(h32, limit), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [True, False])
@settings(max_examples=30)
@given(seeds, st.integers(1, 8), st.integers(1, 4), st.sampled_from([6, 70]))
def test_route_with_ties(kernel, seed, E, k, N):
    """Both paths (C for <= 64 CPU rows, torch's sort) against the reference, with many exact ties."""
    k = min(k, E)
    logits = np.random.default_rng(seed).integers(-2, 3, (N, E)).astype(np.float64)  # many exact ties
    ids, w = route(torch.tensor(logits, dtype=torch.float32), k, kernel=kernel)
    rids, rw = ref_moe.route(logits, k)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    np.testing.assert_array_equal(ids.numpy(), rids)  # ties go to the lower id, as in the reference
    np.testing.assert_allclose(w.double().numpy(), rw, rtol=1e-6, atol=1e-7)
    bids, bw = route(torch.tensor(logits, dtype=torch.bfloat16), k, kernel=kernel)  # small ints: exact in bf16
    np.testing.assert_array_equal(bids.numpy(), rids)
    np.testing.assert_allclose(bw.double().numpy(), rw, rtol=1e-6, atol=1e-7)


def test_route_kernel_nan_ranks_first_and_poisons_its_row():
    """A NaN logit is chosen first (as torch's descending sort puts it) and its row's weights are NaN."""
    logits = torch.tensor([[0.5, float("nan"), 2.0, 1.0], [3.0, 1.0, 2.0, 0.0]])
    for kernel in (True, False):
        ids, w = route(logits, 2, kernel=kernel)
        assert ids.tolist() == [[1, 2], [0, 2]], kernel
        assert bool(torch.isnan(w[0]).all()) and bool(torch.isfinite(w[1]).all()), kernel


def _experts(rng, E, C, I):
    w1b = rng.integers(0, 256, (E, 2 * I, C // 32, 16), dtype=np.uint8)
    w1s = rng.integers(120, 125, (E, 2 * I, C // 32), dtype=np.uint8)
    w2b = rng.integers(0, 256, (E, C, I // 32, 16), dtype=np.uint8)
    w2s = rng.integers(120, 125, (E, C, I // 32), dtype=np.uint8)
    b1 = rng.standard_normal((E, 2 * I)).astype(np.float32) * 0.1
    b2 = rng.standard_normal((E, C)).astype(np.float32) * 0.1
    return w1b, w1s, b1, w2b, w2s, b2


@pytest.mark.parametrize("path", ["cpu_kernel", "cpu_prefill", "gather_matvec", "gather_decode", "per_expert"])
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])  # the patch is constant
@given(seed=seeds, N=st.integers(1, 6))
def test_moe_op_vs_reference(monkeypatch, path, seed, N):
    from optimized import moe as moe_mod
    monkeypatch.setattr(moe_mod, "GATHER_BYTES", 0 if path == "per_expert" else 2**40)  # force the path under test
    monkeypatch.setattr(moe_mod, "CPU_MATVEC", path in ("cpu_kernel", "cpu_prefill", "gather_matvec"))
    monkeypatch.setattr(moe_mod, "CPU_KERNEL_ROWS", 2**20 if path == "cpu_kernel" else 0)
    if path in ("cpu_kernel", "cpu_prefill"):
        _needs_c_kernels()
    if path == "gather_matvec":  # what runs without a C compiler
        monkeypatch.setattr(moe_mod.mxfp4_cpu, "available", lambda: False)
    rng = np.random.default_rng(seed)
    E, C, I, A, limit = 4, 64, 32, 2, 7.0
    w1b, w1s, b1, w2b, w2s, b2 = _experts(rng, E, C, I)
    x = rng.standard_normal((N, C)).astype(np.float32)
    ids, weights = ref_moe.route(rng.standard_normal((N, E)), A)
    want = np.zeros((N, C))
    for n in range(N):
        for a in range(A):
            e = ids[n, a]
            W1, W2 = ref_mxfp4.decode(w1b[e], w1s[e]), ref_mxfp4.decode(w2b[e], w2s[e])
            h = ref_moe.swiglu(W1 @ x[n] + b1[e], limit)
            want[n] += weights[n, a] * (W2 @ h + b2[e])
    t = torch.from_numpy
    got = moe(t(x), t(ids).int(), t(weights).float(), t(w1b), t(w1s), t(b1), t(w2b), t(w2s), t(b2), limit)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_moe_op_residual_and_norm_are_the_steps():
    """The seam's optional arguments on the torch op: moe(x, ..., residual=r, norm_scale=s) is exactly
    r + moe(rms_norm(x, s), ...), the steps a backend without fused kernels runs."""
    from optimized.norm import rms_norm
    rng = np.random.default_rng(7)
    E, C, I, A, limit = 4, 64, 32, 2, 7.0
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x, r = torch.randn(3, C) * 2, torch.randn(3, C)
    s = 1 + 0.1 * torch.randn(C)
    ids, weights = route(torch.randn(3, E), A)
    args = (ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit)
    got = moe(x, *args, residual=r, norm_scale=s)
    assert torch.equal(got, r + moe(rms_norm(x, s), *args))
    assert torch.equal(moe(x, *args, residual=r), r + moe(x, *args))


@settings(max_examples=10)
@given(seeds, st.integers(1, 3), st.integers(1, 3), st.integers(1, 4))
def test_mxfp4_matvec_equals_decode_then_multiply(seed, R, O, B):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (R, O, B, 16), dtype=np.uint8)
    scales = rng.integers(110, 140, (R, O, B), dtype=np.uint8)
    x = rng.standard_normal((R, B * 32))
    want = np.einsum("roc,rc->ro", ref_mxfp4.decode(blocks, scales), x.astype(np.float32).astype(np.float64))
    got = mxfp4.matvec(torch.from_numpy(blocks), torch.from_numpy(scales), torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("simd", MXFP4_SIMD)
@settings(max_examples=10)
@given(seeds, st.integers(1, 6), st.integers(1, 4), st.integers(1, 40), st.integers(1, 4))
def test_cpu_kernel_routed_matvec_vs_ref(simd, seed, R, E, O, B):
    _simd_or_skip(simd)
    rng = np.random.default_rng(seed)
    blocks = torch.from_numpy(rng.integers(0, 256, (E, O, B, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(110, 140, (E, O, B), dtype=np.uint8))
    scales[0, 0, 0] = 0  # the subnormal scale 2**-127
    ids = torch.from_numpy(rng.integers(0, E, R))
    x = torch.randn(R, B * 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    want = np.einsum("roc,rc->ro", ref_mxfp4.decode(blocks.numpy(), scales.numpy())[ids.numpy()], x.double().numpy())
    got = mxfp4_cpu.routed_matvec(blocks, scales, ids, x, simd=simd)
    tiny = 1e-37  # sums under the 2**-127 scale can be float32 subnormals: absolute, not relative, precision
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max() + tiny)
    ref = mxfp4_cpu.matvec_ref(blocks, scales, ids, x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item() + tiny)
    with pytest.raises(IndexError, match="outside"):
        mxfp4_cpu.routed_matvec(blocks, scales, torch.tensor([0, E]), x[:1].expand(2, -1).contiguous())
    with pytest.raises(ValueError, match="contiguous"):
        mxfp4_cpu.routed_matvec(blocks, scales, ids, torch.zeros(R, 2 * B * 32)[:, ::2])  # strided view


@pytest.mark.parametrize("simd", MXFP4_SIMD)
@pytest.mark.parametrize("bias_dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=seeds, N=st.integers(1, 3))
def test_cpu_kernel_moe_decode_vs_torch_op(monkeypatch, simd, bias_dtype, seed, N):
    """The one-call C MoE against the torch op on the same inputs (decode + bmm path, float32 math)."""
    from optimized import moe as moe_mod
    _simd_or_skip(simd)
    monkeypatch.setattr(moe_mod, "CPU_MATVEC", False)  # the torch op: decode the routed experts, bmm
    rng = np.random.default_rng(seed)
    E, C, I, A, limit = 4, 64, 32, 2, 7.0
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    b1, b2 = b1.to(bias_dtype), b2.to(bias_dtype)
    x = torch.from_numpy(rng.standard_normal((N, C)).astype(np.float32))
    ids, weights = route(torch.from_numpy(rng.standard_normal((N, E))), A)
    want = moe(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit)
    got = mxfp4_cpu.moe_decode(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit, ref_moe.SWIGLU_ALPHA, simd=simd)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    with pytest.raises(IndexError, match="outside"):
        mxfp4_cpu.moe_decode(x, torch.full_like(ids, E), weights, w1b, w1s, b1, w2b, w2s, b2, limit, 1.702)
    with pytest.raises(ValueError, match="ids must be a contiguous CPU tensor of torch.int32"):
        mxfp4_cpu.moe_decode(x, ids.long(), weights, w1b, w1s, b1, w2b, w2s, b2, limit, 1.702)


@pytest.mark.parametrize("simd", MXFP4_SIMD)
@pytest.mark.parametrize("bias_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N", [1, 7, 33, 130])
@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=seeds, A=st.integers(1, 4), shape=st.sampled_from([(64, 32), (96, 160)]), chunk=st.sampled_from([256, 5]))
def test_cpu_kernel_moe_prefill_vs_torch_op(monkeypatch, simd, bias_dtype, seed, N, A, shape, chunk):
    """The many-token C MoE against the torch op's expert-by-expert loop on the same inputs (float32 math).
    C=96, I=160: odd block counts (3, 5: 6 and 10 vectors of 16); N=7, 33, 130: x rows not a multiple
    of 4; chunk 5: an expert's rows in several passes; the last expert never routed (zero rows)."""
    from optimized import moe as moe_mod
    _simd_or_skip(simd)
    monkeypatch.setattr(moe_mod, "CPU_MATVEC", False)  # the torch op ...
    monkeypatch.setattr(moe_mod, "GATHER_BYTES", 0)  # ... expert by expert
    monkeypatch.setattr(mxfp4_cpu, "PREFILL_CHUNK", chunk)
    rng = np.random.default_rng(seed)
    (C, I), E, limit = shape, 6, 7.0
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    w1s[0, 0, 0] = 0  # the subnormal scale 2**-127
    b1, b2 = b1.to(bias_dtype), b2.to(bias_dtype)
    x = torch.from_numpy(rng.standard_normal((N, C)).astype(np.float32)) * 4  # crosses the SwiGLU clamps
    logits = rng.standard_normal((N, E))
    logits[:, -1] = -100.0  # expert E-1 gets no rows
    ids, weights = route(torch.from_numpy(logits), A)
    want = moe(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit)
    got = mxfp4_cpu.moe_prefill(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit, ref_moe.SWIGLU_ALPHA, simd=simd)
    assert got.dtype == torch.float32 and got.shape == (N, C)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    bad = ids.clone()
    bad[-1, -1] = E
    with pytest.raises(IndexError, match="moe_prefill: an expert id .* is outside"):
        mxfp4_cpu.moe_prefill(x, bad, weights, w1b, w1s, b1, w2b, w2s, b2, limit, 1.702, simd=simd)
    with pytest.raises(IndexError, match="outside"):
        mxfp4_cpu.moe_prefill(x, -ids - 1, weights, w1b, w1s, b1, w2b, w2s, b2, limit, 1.702, simd=simd)
    with pytest.raises(ValueError, match="moe_prefill: ids must be a contiguous CPU tensor of torch.int32"):
        mxfp4_cpu.moe_prefill(x, ids.long(), weights, w1b, w1s, b1, w2b, w2s, b2, limit, 1.702)


def _bf16_kernel_or_skip(kernel, op, C):
    """Skip a kernel this CPU lacks; otherwise check that it is the one that runs for C columns."""
    from optimized.linear import kernel_name
    _needs_c_kernels()
    if kernel_name(op, 64, kernel) != kernel:
        pytest.skip(f"this CPU has no {kernel} (cpuid)")
    ran = kernel_name(op, C, kernel)
    assert ran == kernel or (kernel == "avx512bf16" and C % 32 and ran == "avx512f"), (kernel, C, ran)


BF16_KERNELS = ["scalar", "avx2", "avx512f", "avx512bf16"]  # optimized.linear.KERNELS; each test skips those
# the CPU lacks. Column counts: multiples of 32 (the vector loops alone) and odd tails after them (the scalar
# tail; 40 and 77 send avx512bf16 to the widening kernel); row counts cover the O % 4 tail rows.
BF16_COLUMNS = [32, 96, 40, 77, 7]


@pytest.mark.parametrize("kernel", BF16_KERNELS)
@settings(max_examples=10)
@given(seeds, st.integers(1, 70), st.sampled_from(BF16_COLUMNS), st.booleans())
def test_cpu_kernel_bf16_matvec_vs_ref(kernel, seed, O, C, bias):
    """The bf16 one-row projection, each kernel the CPU has, against float64 on the same bf16 values."""
    from optimized.linear import bf16_matvec, linear
    _bf16_kernel_or_skip(kernel, "bf16_matvec", C)
    g = torch.Generator().manual_seed(seed)
    w, x = torch.randn(O, C, generator=g).bfloat16(), torch.randn(C, generator=g).bfloat16()
    b = torch.randn(O, generator=g).bfloat16() if bias else None
    want = torch.mv(w.double(), x.double()) + (b.double() if bias else 0)
    got = bf16_matvec(w, x, b, kernel=kernel)
    assert got.dtype == torch.float32 and got.shape == (O,)
    scale = torch.mv(w.double().abs(), x.double().abs()).max().item()  # float32 sums err by ulps of this
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6 * scale)
    y = linear(x[None, None], w, b)  # the engine's entry: one row, the best kernel, rounded once to bf16
    assert y.shape == (1, 1, O) and y.dtype == torch.bfloat16
    torch.testing.assert_close(y[0, 0], bf16_matvec(w, x, b).bfloat16(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="contiguous bfloat16"):
        bf16_matvec(w.float(), x, b)
    with pytest.raises(ValueError, match="contiguous bfloat16"):
        bf16_matvec(w, torch.zeros(2 * C, dtype=torch.bfloat16)[::2], b)


@pytest.mark.parametrize("kernel", BF16_KERNELS[:3])
@pytest.mark.parametrize("O,C", [(1, 7), (5, 77), (70, 768), (33, 800)])
def test_cpu_kernel_bf16_widening_equals_scalar(kernel, O, C):
    """The widening kernels (AVX2, AVX-512F) against the scalar loop on shapes with tails (O % 4 rows, C % 32
    columns): a product of two bf16 is exact in float32, so the kernels differ only in the order of their float32
    sums; on integer-valued data every partial sum is exact and the bits are equal. The bias is added last in
    each."""
    from optimized.linear import bf16_f32_matmul, bf16_matvec
    _bf16_kernel_or_skip(kernel, "bf16_f32_matmul", C)
    g = torch.Generator().manual_seed(O * C)
    w = torch.randint(-8, 9, (O, C), generator=g).bfloat16()
    x = torch.randint(-8, 9, (C,), generator=g).bfloat16()
    b = torch.randint(-100, 100, (O,), generator=g).bfloat16()
    exact = w.double() @ x.double() + b.double()
    for bias in (b, None):
        got = bf16_matvec(w, x, bias, kernel=kernel)
        assert torch.equal(got, bf16_matvec(w, x, bias, kernel="scalar")), kernel
        assert torch.equal(got.double(), exact if bias is not None else exact - b.double())
    xs = torch.randint(-8, 9, (3, C), generator=g).float()
    got = bf16_f32_matmul(w, xs, b.float(), kernel=kernel)
    assert torch.equal(got, bf16_f32_matmul(w, xs, b.float(), kernel="scalar"))
    # random values: equal up to the order of float32 sums
    w, x = torch.randn(O, C, generator=g).bfloat16(), torch.randn(C, generator=g).bfloat16()
    torch.testing.assert_close(bf16_matvec(w, x, kernel=kernel), bf16_matvec(w, x, kernel="scalar"),
                               rtol=1e-5, atol=1e-6 * C)


def test_cpu_kernel_bf16_names():
    """kernel_name reports what runs: 'auto' is the best the CPU has; a cap the CPU cannot run falls to the next
    one down; avx512bf16 needs bf16 x and C % 32 == 0."""
    from optimized.linear import KERNELS, kernel_name
    _needs_c_kernels()
    best = kernel_name("bf16_matvec", 768)
    assert best in KERNELS and kernel_name("bf16_matvec", 768, "scalar") == "scalar"
    assert kernel_name("bf16_f32_matmul", 768) in KERNELS[:3]
    assert kernel_name("bf16_matvec", 40) != "avx512bf16"
    with pytest.raises(ValueError, match="kernel must be"):
        kernel_name("bf16_matvec", 768, "avx9")


@pytest.mark.parametrize("kernel", BF16_KERNELS[:3])
@settings(max_examples=10)
@given(seeds, st.integers(1, 70), st.sampled_from(BF16_COLUMNS), st.sampled_from([1, 3, 16, 40]), st.booleans())
def test_cpu_kernel_bf16_f32_matmul_vs_ref(kernel, seed, O, C, N, bias):
    """A float32 model's bf16-stored matrix: float32 x times exactly widened weights, each kernel the CPU has,
    against float64 on the same values; linear() takes the kernel up to KERNEL_ROWS rows, widened copies beyond."""
    from optimized.linear import bf16_f32_matmul, linear
    _bf16_kernel_or_skip(kernel, "bf16_f32_matmul", C)
    g = torch.Generator().manual_seed(seed)
    w, x = torch.randn(O, C, generator=g).bfloat16(), torch.randn(N, C, generator=g)
    b = torch.randn(O, generator=g) if bias else None
    want = x.double() @ w.double().T + (b.double() if bias else 0)
    got = bf16_f32_matmul(w, x, b, kernel=kernel)
    assert got.dtype == torch.float32 and got.shape == (N, O)
    scale = (x.double().abs() @ w.double().abs().T).max().item()  # float32 sums err by ulps of this, not of the sum
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6 * scale)
    y = linear(x[None], w, b)
    assert y.shape == (1, N, O) and y.dtype == torch.float32
    torch.testing.assert_close(y[0].double(), want, rtol=1e-5, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="contiguous torch.float32"):
        bf16_f32_matmul(w, x.bfloat16(), b)
    with pytest.raises(ValueError, match="contiguous torch.bfloat16"):
        bf16_f32_matmul(w.float(), x, b)


@settings(max_examples=20)
@given(st.lists(st.integers(0, 70000), min_size=1, max_size=6), st.sampled_from([1.0, 32.0]))
def test_rope_cos_sin(positions, factor):
    args = (16, 150000.0, factor, 4096, 1.0, 32.0)
    inv, conc = rope.inv_freq_and_concentration(*args)
    rinv, rconc = ref_rope.inv_freq_and_concentration(*args)
    np.testing.assert_allclose(inv.numpy(), rinv, rtol=1e-15)
    assert conc == rconc
    cos, sin = rope.cos_sin(torch.tensor(positions), inv, conc)
    rc, rs = ref_rope.cos_sin(np.array(positions), rinv, rconc)
    np.testing.assert_allclose(cos.double().numpy(), rc, atol=1e-6)  # float32 rounding of values <= 1.35
    np.testing.assert_allclose(sin.double().numpy(), rs, atol=1e-6)


@settings(max_examples=25)
@given(seeds, st.integers(1, 5), st.integers(1, 9), st.sampled_from([0, 3]))
def test_attention_op_vs_reference(seed, T, S, window):
    rng = np.random.default_rng(seed)
    B, H, K, D = 2, 4, 2, 8
    q = rng.standard_normal((B, T, H, D)).astype(np.float32)
    k = rng.standard_normal((B, S, K, D)).astype(np.float32)
    v = rng.standard_normal((B, S, K, D)).astype(np.float32)
    sinks = rng.standard_normal(H).astype(np.float32)
    k_pos = np.stack([rng.permutation(S + 2)[:S] - 1 for _ in range(B)])  # ring-like order, some -1 (empty)
    q_pos = rng.integers(-1, S + 2, (B, T))  # some queries see nothing (or are padding)
    got = ops.attention(*(torch.from_numpy(a) for a in (q, k, v, sinks)), D ** -0.5, window,
                        torch.from_numpy(q_pos), torch.from_numpy(k_pos)).double().numpy()
    for b in range(B):
        keep = k_pos[b] >= 0
        for t in range(T):
            if not keep.any() or not (k_pos[b][keep] <= q_pos[b, t]).any() or (
                    window and not ((k_pos[b][keep] <= q_pos[b, t]) & (q_pos[b, t] - k_pos[b][keep] < window)).any()):
                np.testing.assert_array_equal(got[b, t], 0.0)  # no visible key: all weight on the sink
                continue
            want = ref_attn.sdpa(q[b, t:t + 1].reshape(1, K, H // K, D).astype(np.float64),
                                 k[b][keep].astype(np.float64), v[b][keep].astype(np.float64),
                                 sinks.reshape(K, H // K).astype(np.float64), q_pos[b, t:t + 1],
                                 k_pos[b][keep], window or None)
            np.testing.assert_allclose(got[b, t], want.reshape(H, D), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
# D=12: the scalar path; D=8: AVX2 dot products (with AVX2); else AVX-512 where the CPU has it, AVX2 dots otherwise
@pytest.mark.parametrize("H,K,D", [(4, 2, 12), (4, 2, 8), (8, 2, 64), (6, 3, 32)])
@settings(max_examples=10)
@given(seeds, st.integers(1, 3), st.one_of(st.integers(1, 20), st.sampled_from([64, 65, 150])),
       st.sampled_from([0, 4, 70]))
def test_cpu_kernel_attention_decode_vs_op(kv_dtype, H, K, D, seed, B, S, window):
    """The C one-token attention against the torch op (its *_ref), on the same (possibly bf16) cache values:
    ring-like key positions, empty slots, windows, a padding query (-1) and queries that see nothing; S above 64:
    several key blocks of the AVX-512 path (a later block raising the running max, blocks seeing nothing)."""
    from optimized.attention import attention_cpu, attention_decode
    _needs_c_kernels()
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, 1, H, D, generator=g).to(kv_dtype)
    k, v = (torch.randn(B, S, K, D, generator=g).to(kv_dtype) for _ in range(2))
    sinks = torch.randn(H, generator=g)
    k_pos = torch.stack([torch.randperm(S + 2, generator=g)[:S] - 1 for _ in range(B)])
    q_pos = torch.randint(-1, S + 2, (B, 1), generator=g)
    want = ops.attention(q, k, v, sinks, D ** -0.5, window, q_pos, k_pos)
    got = attention_decode(q, k, v, sinks, D ** -0.5, window, q_pos, k_pos)
    assert got.dtype == q.dtype and got.shape == (B, 1, H, D)
    tol = 1e-5 if kv_dtype == torch.float32 else 1e-2  # bf16: both round one float32 result to bf16
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    assert torch.equal(attention_cpu(q, k, v, sinks, D ** -0.5, window, q_pos, k_pos), got)  # the backend's path
    with pytest.raises(ValueError, match="contiguous"):
        strided = torch.zeros(B, S, K, 2 * D, dtype=kv_dtype)[..., ::2]  # a view of every other element
        attention_decode(q, strided, v, sinks, D ** -0.5, window, q_pos, k_pos)


def test_backend_registry(monkeypatch):
    assert ops.get_backend().moe is moe and ops.get_backend("torch").route is route
    with pytest.raises(ops.BackendError, match="unknown backend 'cuda'"):
        ops.get_backend("cuda")
    import sys
    monkeypatch.setitem(sys.modules, "optimized.kernels", None)  # a package that fails to import
    with pytest.raises(ops.BackendError, match="optimized.kernels.*failed to import"):
        ops.get_backend("triton")


def at_threads(runs: dict, threads: int) -> dict:
    """{name: f()} with torch's (and so the C kernels' OpenMP) thread count set to `threads`, then restored."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return {name: f() for name, f in runs.items()}
    finally:
        torch.set_num_threads(before)


def test_cpu_kernels_split_over_threads_give_the_same_bits():
    """Shapes above the kernels' parallel thresholds: each output is computed by one OpenMP thread, so 1 and 2
    threads (torch.set_num_threads sets both: the kernels share torch's libgomp) give identical bits, and both
    agree with the torch references."""
    from optimized.attention import attention, attention_decode
    from optimized.linear import bf16_f32_matmul, bf16_matvec
    _needs_c_kernels()
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    E, C, I, A, N = 4, 1024, 1024, 2, 1
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x = torch.randn(N, C, generator=g)
    ids, weights = route(torch.randn(N, E, generator=g), A)
    xs = torch.randn(20, C, generator=g)
    ids20, weights20 = route(torch.randn(20, E, generator=g), A)
    w = torch.randn(512, 512, generator=g).bfloat16()
    xv = torch.randn(3, 512, generator=g)
    q, k, v = torch.randn(1, 1, 8, 64, generator=g), torch.randn(1, 300, 2, 64, generator=g), torch.randn(
        1, 300, 2, 64, generator=g)
    sinks, qp, kp = torch.randn(8, generator=g), torch.tensor([[299]]), torch.arange(300)[None]
    runs = {
        "moe_decode": lambda: mxfp4_cpu.moe_decode(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, 7.0, 1.702),
        "moe_prefill": lambda: mxfp4_cpu.moe_prefill(xs, ids20, weights20, w1b, w1s, b1, w2b, w2s, b2, 7.0, 1.702),
        "bf16_f32_matmul": lambda: bf16_f32_matmul(w, xv),
        "bf16_matvec": lambda: bf16_matvec(w, xv[0].bfloat16()),
        "attention_decode": lambda: attention_decode(q, k, v, sinks, 0.125, 0, qp, kp),
    }
    refs = {
        "moe_decode": lambda: moe(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, 7.0),
        "moe_prefill": lambda: moe(xs, ids20, weights20, w1b, w1s, b1, w2b, w2s, b2, 7.0),
        "bf16_f32_matmul": lambda: xv @ w.float().T,
        "bf16_matvec": lambda: w.float() @ xv[0].bfloat16().float(),
        "attention_decode": lambda: attention(q, k, v, sinks, 0.125, 0, qp, kp),
    }
    one, two = at_threads(runs, 1), at_threads(runs, 2)
    import unittest.mock
    with unittest.mock.patch("optimized.moe.CPU_MATVEC", False):
        want = {name: f() for name, f in refs.items()}
    for name in runs:
        assert torch.equal(one[name], two[name]), name
        scale = want[name].abs().max().item()
        torch.testing.assert_close(two[name].float(), want[name].float(), rtol=1e-4, atol=1e-4 * scale, msg=name)


def test_cbuild_without_openmp_builds_single_threaded_and_names_failures(tmp_path, monkeypatch):
    """A compiler without OpenMP still builds the kernels (the pragmas are ignored); a compiler that fails
    outright makes load() return None with the compiler's words, and the callers keep their torch paths."""
    from optimized import cbuild
    _needs_c_kernels()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cbuild, "OPENMP", ["-fno-such-option-for-the-test"])
    lib = cbuild._build(cbuild.CSRC / "rms_norm.c")
    assert hasattr(lib, "rms_norm_rows")
    assert len(list((tmp_path / "gpt-oss-kit").glob("rms_norm_*.so"))) == 1  # the build without OpenMP only
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(cbuild, "shutil", type("S", (), {"which": staticmethod(lambda name: "/bin/false")}))
    monkeypatch.setattr(cbuild, "_loaded", {})
    monkeypatch.setattr(cbuild, "reasons", {})
    assert cbuild.load("route.c", {}) is None
    assert "failed on route.c" in cbuild.reasons["route.c"]


@pytest.mark.parametrize("openmp", [True, False])
def test_every_kernel_builds_for_a_cpu_without_x86_vectors(tmp_path, openmp):
    """Each csrc/ source compiled as for a non-x86 CPU (__x86_64__ undefined after the system headers): it builds
    with the same flags as cbuild's, and every function its module loads is there, so an ARM or RISC-V machine
    keeps the scalar C paths rather than falling back to torch (a helper outside the x86 block once broke this)."""
    import ctypes
    import shutil
    import subprocess
    from optimized import attention, cbuild, linear, moe, norm
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    modules = {mxfp4_cpu.SOURCE: mxfp4_cpu.SIGNATURES, mxfp4_cpu.PREFILL_SOURCE: mxfp4_cpu.PREFILL_SIGNATURES,
               linear.SOURCE: linear.SIGNATURES, norm.SOURCE: norm.SIGNATURES, moe.ROUTE_SOURCE: moe.ROUTE_SIGNATURES,
               attention._DECODE_SOURCE: attention._DECODE_SIGNATURES}
    assert set(modules) == {p.name for p in cbuild.CSRC.glob("*.c")}, "a kernel source this test does not know"
    flags = cbuild.FLAGS + (cbuild.OPENMP if openmp else []) + ["-Werror=implicit-function-declaration"]
    for source, signatures in modules.items():
        wrapper = tmp_path / f"portable_{source}"
        wrapper.write_text("#include <math.h>\n#include <stdint.h>\n#include <string.h>\n#include <stdlib.h>\n"
                           + ("#include <omp.h>\n" if openmp else "")
                           + f"#undef __x86_64__\n#include \"{cbuild.CSRC / source}\"\n")
        so = tmp_path / f"{source}.so"
        run = subprocess.run([cc, *flags, "-o", str(so), str(wrapper)], capture_output=True, text=True)
        assert run.returncode == 0, (source, run.stderr[-2000:])
        lib = ctypes.CDLL(str(so))
        for name in signatures:
            assert hasattr(lib, name), (source, name)


@pytest.mark.parametrize("window", [0, 70])
def test_cpu_kernel_attention_decode_blocks_and_rising_max(window):
    """The AVX-512 path's online softmax over 64-key blocks: scores that rise block after block (each block
    rescales the ones before), a first block the window hides, a large sink, against the torch op."""
    from optimized.attention import attention_decode
    _needs_c_kernels()
    g = torch.Generator().manual_seed(3)
    H, K, D, S = 8, 2, 64, 200
    q = torch.randn(1, 1, H, D, generator=g)
    rise = torch.linspace(0, 3, S)[None, :, None, None] * q[0, 0, ::4][None, None] / 8  # head 4*kh's scores grow
    k = torch.randn(1, S, K, D, generator=g) * 0.1 + rise
    v = torch.randn(1, S, K, D, generator=g)
    sinks = torch.tensor([8.0, -8.0, 0.0, 2.0, 30.0, -30.0, 1.0, 0.5])
    q_pos, k_pos = torch.tensor([[S - 1]]), torch.arange(S)[None]
    want = ops.attention(q, k, v, sinks, D ** -0.5, window, q_pos, k_pos)
    got = attention_decode(q, k, v, sinks, D ** -0.5, window, q_pos, k_pos)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
