"""The engine's int8 activations (`activations="int8"`: the experts' inputs in Q8_0, llama.cpp's CPU MXFP4 path)
against golden/activations.py's q8_0, the rounding the kit's classes "+int8" are measured with.

- routed_matvec(int8=True): the integer block dots equal the float64 product of the decoded weights with q8_0(x)
  (the same float32 rounding of x, so the same q; only the float32 sums differ), every vector path, any shape
  (odd block counts, row remainders), activations from float16-subnormal to large scales;
- moe_decode / moe_prefill(int8=True) against a float64 MoE with q8_0 at both expert inputs. The SwiGLU output is
  rounded from float32 values that differ by an ulp between the two, so a rare element lands on the other side
  of a rounding step (one step: d = amax/127 of its block): the bound is loose (3% of the output's scale), which
  a wrong layout or an overlapping scratch (errors of the output's own size) is far beyond;
- a NaN or inf in a block poisons what it feeds, as golden's rounding does, never a silent number;
- Model/Engine refuse what they cannot run in one line; the kit certifies the engine in class bfloat16+int8.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.activations import q8_0
from optimized import mxfp4_cpu
from optimized.__main__ import TINY
from optimized.generate import Engine
from optimized.moe import route
from reference import moe as ref_moe
from reference import mxfp4 as ref_mxfp4
from test_conformance_diagnosis import run_kit
from test_optimized_ops import MXFP4_SIMD, _experts, _simd_or_skip, at_threads

torch.set_num_threads(1)
seeds = st.integers(0, 2**31 - 1)


@pytest.mark.parametrize("simd", MXFP4_SIMD)
@settings(max_examples=12, deadline=None)
@given(seeds, st.integers(1, 5), st.integers(1, 4), st.integers(1, 41), st.integers(1, 5),
       st.sampled_from([1e-7, 1e-3, 1.0, 300.0]))
def test_routed_matvec_int8_is_the_product_with_q8_0(simd, seed, R, E, O, B, magnitude):
    _simd_or_skip(simd)
    rng = np.random.default_rng(seed)
    blocks = torch.from_numpy(rng.integers(0, 256, (E, O, B, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(110, 140, (E, O, B), dtype=np.uint8))
    scales[0, 0, 0] = 0  # the subnormal 2**-127
    ids = torch.from_numpy(rng.integers(0, E, R))
    x = torch.from_numpy((rng.standard_normal((R, B * 32)) * magnitude).astype(np.float32))
    x[0, :32] = 0.0  # an all-zero block: d = 0, q = 0
    want = np.einsum("roc,rc->ro", ref_mxfp4.decode(blocks.numpy(), scales.numpy())[ids.numpy()],
                     q8_0(x).double().numpy())
    got = mxfp4_cpu.routed_matvec(blocks, scales, ids, x, simd=simd, int8=True)
    tiny = 1e-37  # sums under the 2**-127 scale are float32 subnormals
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max() + tiny)
    if mxfp4_cpu.kernel_name(simd, int8=True) == "avx512vnni int8":  # its lanes and order are the AVX2 kernel's
        assert torch.equal(got, mxfp4_cpu.routed_matvec(blocks, scales, ids, x, simd="avx2", int8=True))


def _moe_q8_ref(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit):
    """float64 MoE with golden's q8_0 at mlp1's and mlp2's inputs (golden/baseline.py's rule)."""
    W1, W2 = ref_mxfp4.decode(w1b.numpy(), w1s.numpy()), ref_mxfp4.decode(w2b.numpy(), w2s.numpy())
    xq = q8_0(x).double().numpy()
    out = np.zeros(x.shape, np.float64)
    for n in range(x.shape[0]):
        for a in range(ids.shape[1]):
            e = int(ids[n, a])
            h = W1[e] @ xq[n] + b1[e].double().numpy()
            act = ref_moe.swiglu(h, limit)
            act = q8_0(torch.from_numpy(act).float()).double().numpy()
            out[n] += float(weights[n, a]) * (W2[e] @ act + b2[e].double().numpy())
    return out


@pytest.mark.parametrize("simd", MXFP4_SIMD)
@pytest.mark.parametrize("kernel", ["moe_decode", "moe_prefill"])
@settings(max_examples=5, deadline=None)
@given(seed=seeds, N=st.integers(1, 5))
def test_moe_int8_is_the_moe_with_q8_0_inputs(simd, kernel, seed, N):
    _simd_or_skip(simd)
    rng = np.random.default_rng(seed)
    E, C, I, A, limit = 4, 96, 64, 2, 7.0  # C: 3 blocks (odd), I: 2
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x = torch.from_numpy(rng.standard_normal((N, C)).astype(np.float32))
    ids, weights = route(torch.from_numpy(rng.standard_normal((N, E))), A)
    want = _moe_q8_ref(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit)
    got = getattr(mxfp4_cpu, kernel)(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit, ref_moe.SWIGLU_ALPHA,
                                     simd=simd, int8=True).double().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=0.03 * np.abs(want).max())
    off = getattr(mxfp4_cpu, kernel)(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, limit, ref_moe.SWIGLU_ALPHA,
                                     simd=simd)
    assert not torch.equal(off, torch.from_numpy(got).float()), "int8=True changed nothing"


@pytest.mark.parametrize("alpha", [ref_moe.SWIGLU_ALPHA, 0.0])
@settings(max_examples=6, deadline=None)
@given(seed=seeds, N=st.integers(1, 9), B1=st.integers(1, 9), B2=st.integers(1, 9))
def test_int8_prefill_is_the_decode_bit_for_bit(alpha, seed, N, B1, B2):
    """One expert a token, AVX2 (scalar SwiGLU in both): moe_prefill's int8 tiles (x offset by 128, 128 * sum w
    taken off in int32) give rows_q8_avx2's int32 lane sums, summed in its order, so the two kernels agree in every
    bit; and so does the decode's AVX-512 VNNI kernel (two rows a register, weights offset by 12) where it runs.
    Odd block counts (an unpaired last block), N not a multiple of the VNNI prefill's 4 rows of x, and experts with
    several rows included. (The float tiles on the Q8_0 values, the prefill's path before, sum in another order and
    fail this.) With alpha 0 the SwiGLU's exp is exp(0) = 1 in libm's expf and in the AVX-512 polynomial alike, so
    the prefill's AVX-512 level (its VNNI tiles) is held to the same bits too."""
    _simd_or_skip("avx2")
    rng = np.random.default_rng(seed)
    E, C, I = 3, 32 * B1, 32 * B2
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x = torch.from_numpy((rng.standard_normal((N, C)) * 10.0 ** rng.uniform(-3, 2, (N, 1))).astype(np.float32))
    ids = torch.from_numpy(rng.integers(0, E, (N, 1)).astype(np.int32))
    weights = torch.from_numpy(rng.uniform(0.1, 1.0, (N, 1)).astype(np.float32))
    args = (x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, 7.0, alpha)
    prefill = mxfp4_cpu.moe_prefill(*args, simd="avx2", int8=True)
    assert torch.equal(prefill, mxfp4_cpu.moe_decode(*args, simd="avx2", int8=True))
    if mxfp4_cpu.kernel_name("avx512f", int8=True) == "avx512vnni int8":  # the VNNI kernels too (scalar SwiGLU)
        assert torch.equal(prefill, mxfp4_cpu.moe_decode(*args, simd="avx512f", int8=True))
        if alpha == 0.0:
            assert torch.equal(prefill, mxfp4_cpu.moe_prefill(*args, simd="avx512f", int8=True))


@pytest.mark.parametrize("kernel", ["routed_matvec", "moe_decode", "moe_prefill"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_activation_poisons_its_outputs(kernel, bad):
    rng = np.random.default_rng(0)
    E, C, I = 2, 64, 32
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x = torch.randn(1, C)
    x[0, 5] = bad
    if kernel == "routed_matvec":
        y = mxfp4_cpu.routed_matvec(w1b, w1s, torch.tensor([1]), x, int8=True)
    else:
        y = getattr(mxfp4_cpu, kernel)(x, torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([[0.5, 0.5]]), w1b,
                                 w1s, b1, w2b, w2s, b2, 7.0, 1.702, int8=True)
    assert not torch.isfinite(y).any(), y


def test_blocks_at_the_ends_of_float16():
    """d under float16's least subnormal (amax < ~3.8e-6): the block's values are all 0, as golden's (its 1 / d,
    inf below amax ~3.7e-37, is never formed); d beyond float16 (amax >= ~8.3e6): the block poisons its outputs."""
    rng = np.random.default_rng(1)
    E, O, B = 1, 8, 2
    blocks = torch.from_numpy(rng.integers(0, 256, (E, O, B, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(120, 130, (E, O, B), dtype=np.uint8))
    x = torch.randn(1, B * 32)
    ids = torch.tensor([0])
    for tiny in (1e-6, 1e-38):
        y = x.clone()
        y[0, :32] *= tiny / y[0, :32].abs().max()
        assert torch.equal(q8_0(y)[0, :32], torch.zeros(32)) or tiny < 1e-30  # golden's: 0 (NaN below ~3.7e-37)
        want = mxfp4_cpu.routed_matvec(blocks[:, :, 1:].contiguous(), scales[:, :, 1:].contiguous(), ids,
                                       y[:, 32:].contiguous(), int8=True)
        torch.testing.assert_close(mxfp4_cpu.routed_matvec(blocks, scales, ids, y, int8=True), want)
    y = x.clone()
    y[0, 3] = 1e7
    assert not torch.isfinite(mxfp4_cpu.routed_matvec(blocks, scales, ids, y, int8=True)).any()


def test_int8_kernels_split_over_threads_give_the_same_bits():
    """Above the parallel thresholds (rows split over OpenMP threads; moe_decode's region gives each thread a share
    of every expert's rows, 3 threads an uneven one): 1, 2 and 3 threads give identical bits."""
    rng = np.random.default_rng(2)
    E, C, I, A = 2, 736, 1056, 2  # 23 and 33 blocks: odd, an unpaired last block in every thread's rows
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x = torch.from_numpy(rng.standard_normal((1, C)).astype(np.float32))
    ids, weights = torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([[0.6, 0.4]])
    blocks = torch.from_numpy(rng.integers(0, 256, (1, 515, 91, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(120, 130, (1, 515, 91), dtype=np.uint8))
    xr = torch.from_numpy(rng.standard_normal((1, 91 * 32)).astype(np.float32))
    runs = {"moe_decode": lambda: mxfp4_cpu.moe_decode(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, 7.0, 1.702,
                                                       int8=True),
            "moe_decode_float": lambda: mxfp4_cpu.moe_decode(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, 7.0,
                                                             1.702),
            "moe_prefill": lambda: mxfp4_cpu.moe_prefill(x.repeat(9, 1), ids.repeat(9, 1), weights.repeat(9, 1), w1b,
                                                         w1s, b1, w2b, w2s, b2, 7.0, 1.702, int8=True),
            "routed_matvec": lambda: mxfp4_cpu.routed_matvec(blocks, scales, torch.tensor([0]), xr, int8=True)}
    one, two, three = at_threads(runs, 1), at_threads(runs, 2), at_threads(runs, 3)
    for name in runs:
        assert torch.equal(one[name], two[name]) and torch.equal(one[name], three[name]), name


@pytest.mark.parametrize("simd", MXFP4_SIMD)
@pytest.mark.parametrize("int8", [False, True])
def test_kernels_write_only_inside_their_buffers(simd, int8, monkeypatch):
    """Every buffer mxfp4_cpu hands the C kernels (out, work, scratch) is allocated with a guard tail of NaN-bit
    canaries: after moe_decode, moe_prefill and routed_matvec (odd block counts, several tokens an expert, two
    threads) each tail is intact, so the scratch sizes Python computes cover what the C layouts write."""
    _simd_or_skip(simd)
    guards, empty = [], torch.empty

    def guarded(*shape, dtype=torch.float32):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        n = int(np.prod(shape))
        big = empty(n + 4096, dtype=dtype)
        big[n:] = -7  # a value no kernel writes there by chance
        guards.append((big, n))
        return big[:n].view(*shape)
    monkeypatch.setattr(mxfp4_cpu.torch, "empty", guarded)
    rng = np.random.default_rng(4)
    E, C, I, A, N = 4, 32 * 5, 32 * 3, 2, 11
    w1b, w1s, b1, w2b, w2s, b2 = (torch.from_numpy(a) for a in _experts(rng, E, C, I))
    x = torch.from_numpy(rng.standard_normal((N, C)).astype(np.float32))
    ids, weights = route(torch.from_numpy(rng.standard_normal((N, E))), A)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for kernel in ("moe_decode", "moe_prefill"):
            getattr(mxfp4_cpu, kernel)(x, ids, weights, w1b, w1s, b1, w2b, w2s, b2, 7.0, 1.702, simd=simd, int8=int8)
        mxfp4_cpu.routed_matvec(w1b, w1s, ids.reshape(-1).long(), x.repeat_interleave(A, 0), simd=simd, int8=int8)
    finally:
        torch.set_num_threads(before)
    assert len(guards) == 7, len(guards)  # out + scratch twice, out + work + scratch
    for big, n in guards:
        assert torch.equal(big[n:], torch.full((4096,), -7, dtype=big.dtype)), (n, big.dtype)


def test_engine_int8_runs_its_class_and_refuses_what_it_cannot():
    plain = Engine.load(TINY, "cpu", torch.float32, context=64).logits([1, 2, 3, 4, 5])
    int8 = Engine.load(TINY, "cpu", torch.float32, activations="int8", context=64).logits([1, 2, 3, 4, 5])
    assert torch.isfinite(int8).all() and not torch.equal(plain, int8)
    with pytest.raises(ValueError, match="activations must be None or one of"):
        Engine.load(TINY, "cpu", torch.float32, activations="fp8")
    with pytest.raises(ValueError, match="needs the torch backend"):
        Engine.load(TINY, "cpu", torch.float32, backend="triton", activations="int8")


def test_kit_certifies_the_int8_engine_in_its_class(tmp_path, monkeypatch):
    """The engine's bf16 + int8 mode (optimized.adapter:factory_bf16_int8, `activations = "int8"`) is held to the
    class bfloat16+int8, whose baselines round as it does, and passes with headroom."""
    rc, cert = run_kit("optimized.adapter:factory_bf16_int8", ["conformance/"], tmp_path, monkeypatch)
    assert cert["implementation"]["dtype"] == "bfloat16+int8"
    assert rc == pytest.ExitCode.OK, [c["message"] for c in cert["checks"] if c["status"] == "fail"]
    worst = max(m["measured"] / m["bound"] for c in cert["checks"] for m in c["measures"] if m.get("bound"))
    assert worst < 0.8, f"{worst:.2f} of its bound"
