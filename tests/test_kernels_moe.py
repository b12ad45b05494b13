"""optimized/kernels/moe.py (and the moe_*.py and mxfp4.py it runs): the Triton MXFP4 MoE (up + SwiGLU, down +
weighted sum over k) against moe_ref.

Tolerance, relative to a baseline (STYLE.md 9): the error of the kernel against a float64 evaluation of the
same op must be at most 4x the error of the plain torch op in the same dtype (moe_ref) plus a small atol.
CPU: Triton interpreter in fp32/fp16 on small shapes. GPU: also bf16, the real 20b/120b expert shapes, and a
CUDA-graph capture of route + moe."""
import importlib
import os

import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES, needs_cuda  # before optimized.kernels: the interpreter without CUDA
import triton  # noqa: E402  (after kernel_env: the interpreter switch must precede triton's import)
import triton.language as tl  # noqa: E402
from optimized.kernels.moe import moe, moe_ref
from optimized.kernels.moe_group import group_by_expert, group_by_expert_kernel
from optimized.kernels.mxfp4 import mxfp4_dequant, mxfp4_dequant_ref
from optimized.kernels.route import route
from reference import mxfp4 as mxfp4_numpy
from reference.mxfp4 import FP4_VALUES

kernels_moe = importlib.import_module("optimized.kernels.moe")  # the module (optimized.kernels.moe is the function)
kernels_mxfp4 = importlib.import_module("optimized.kernels.mxfp4")
tuning = importlib.import_module("optimized.kernels.tuning")
MOE_KERNEL_MODULES = [importlib.import_module(f"optimized.kernels.{m}") for m in ("moe_group", "moe_mma", "moe_gemv")]

ATOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-1}
LIMIT = 7.0


def make_experts(E, C, I, dtype, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    # scales around 2**-4..2**-1 keep fp16 far from overflow while every FP4 code appears
    w1b = torch.randint(0, 256, (E, 2 * I, C // 32, 16), dtype=torch.uint8, generator=g)
    w1s = torch.randint(123, 127, (E, 2 * I, C // 32), dtype=torch.uint8, generator=g)
    w2b = torch.randint(0, 256, (E, C, I // 32, 16), dtype=torch.uint8, generator=g)
    w2s = torch.randint(123, 127, (E, C, I // 32), dtype=torch.uint8, generator=g)
    b1 = torch.randn(E, 2 * I, generator=g).to(dtype)
    b2 = torch.randn(E, C, generator=g).to(dtype)
    return [t.to(device) for t in (w1b, w1s, b1, w2b, w2s, b2)]


def make_routing(N, E, A, seed, unused=(), device=DEVICE):
    g = torch.Generator().manual_seed(seed + 1)
    logits = torch.randn(N, E, generator=g)
    logits[:, list(unused)] = -1e9  # experts that receive zero tokens
    ids, w = route(logits.to(device), A)
    return ids, w


def check(N, E, C, I, A, dtype, seed=0, unused=(), slack=4, atol=None):
    """moe against a float64 evaluation: its error at most `slack` times moe_ref's in the same dtype, plus atol
    (ATOL[dtype] by default) times the output's scale."""
    experts = make_experts(E, C, I, dtype, seed)
    ids, w = make_routing(N, E, A, seed, unused)
    g = torch.Generator().manual_seed(seed + 2)
    x = (torch.randn(N, C, generator=g) * 0.5).to(dtype).to(DEVICE)
    w1b, w1s, b1, w2b, w2s, b2 = experts
    out = moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    assert out.shape == (N, C) and out.dtype == dtype
    base = moe_ref(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    gold = moe_ref(x.double(), ids, w.double(), w1b, w1s, b1.double(), w2b, w2s, b2.double(), LIMIT)
    err = (out.double() - gold).abs().max().item()
    base_err = (base.double() - gold).abs().max().item()
    scale = max(1.0, gold.abs().max().item())
    assert err <= slack * base_err + (ATOL[dtype] if atol is None else atol) * scale, (err, base_err, scale)
    assert torch.isfinite(out).all()
    return out, (x, ids, w, *experts)


# (N, E, C, I, A, unused experts): decode (N <= 64) and prefill regimes, odd N, k = 1..4, a K tail (C = 96 is not
# a multiple of BLOCK_K = 128), experts with zero tokens, and one expert receiving more rows than a tile holds
CASES = [
    (1, 4, 64, 64, 1, ()),
    (3, 6, 64, 96, 2, (0, 5)),
    (5, 8, 96, 64, 4, (1,)),
    (40, 4, 64, 64, 4, ()),  # every expert gets all 40 tokens: 3 tiles of 16 each
    (70, 5, 64, 64, 3, (2,)),  # prefill tiles (64 rows in fp32, 128 in 16-bit)
    (300, 2, 64, 64, 1, ()),  # prefill, ~150 rows an expert: more than a 16-bit tile of 128
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("N,E,C,I,A,unused", CASES)
def test_moe_matches_ref(N, E, C, I, A, unused, dtype):
    check(N, E, C, I, A, dtype, seed=N + E, unused=unused)


PATHS = {"gemv": dict(GEMV_MAX_TOKENS=10 ** 6), "dot_scaled": dict(GEMV_MAX_TOKENS=0, MX_DOT=True),
         "dot": dict(GEMV_MAX_TOKENS=0, MX_DOT=False)}


def use_path(monkeypatch, path):
    """Make moe run one of its batch-1 paths: the GEMV kernels, or the tensor-core ones with / without
    tl.dot_scaled (which only bf16/fp16 x take; fp32 runs the plain dot either way)."""
    want = PATHS[path]
    monkeypatch.setattr(tuning, "GEMV_MAX_TOKENS", want["GEMV_MAX_TOKENS"])
    monkeypatch.setattr(tuning, "GEMV_PAIRS_PER_EXPERT", float("inf"))
    if "MX_DOT" in want:
        monkeypatch.setattr(tuning, "DECODE_CONFIG", dict(tuning.DECODE_CONFIG, MX_DOT=want["MX_DOT"]))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("E,C,I,A", [(4, 64, 64, 1), (6, 96, 64, 2), (8, 320, 192, 4), (5, 608, 32, 3)])
def test_moe_batch1_paths_match_ref(E, C, I, A, dtype, path, monkeypatch):
    """Batch 1 through each path, K lengths that are and are not multiples of the K steps (GEMV: 512 codes;
    C = 608 is one step and a 96-code tail)."""
    use_path(monkeypatch, path)
    check(1, E, C, I, A, dtype, seed=E + C + A)


def test_gemv_pays_on_the_real_shapes():
    """The GEMV/tensor-core choice for gpt-oss's expert counts (top-4): batch 1 always; 20b up to 12 tokens (48 pairs
    <= 2 x ~25 experts), 120b up to GEMV_MAX_TOKENS = 16."""
    pays = kernels_moe.gemv_pays
    assert [N for N in range(1, 129) if pays(N, 4, 32)] == list(range(1, 13))
    assert [N for N in range(1, 129) if pays(N, 4, 128)] == list(range(1, 17))
    assert pays(1, 1, 1) and pays(1, 4, 4) and not pays(17, 1, 10 ** 6)


def test_group_kernel_writes_x_as_the_gemv_kernels_read_it(monkeypatch):
    """_group_kernel with X_OUT writes gemv_x_ref(x) (fp32, x * 2**64, code-major); gemv_x_ref itself is that
    layout; moe's fallback when the one-program grouping does not apply (here forced) gives the same answer."""
    x = torch.randn(1, 96, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    xs = torch.empty((1, 8, 12), dtype=torch.float32, device=DEVICE)
    ids = torch.tensor([[3, 0]], dtype=torch.int32, device=DEVICE)
    group_by_expert_kernel(ids, 4, 1, x, xs)
    want = kernels_mxfp4.gemv_x_ref(x)
    assert torch.equal(xs, want)
    k = torch.arange(96)
    assert torch.equal(want[0, k % 8, k // 8].cpu(), x[0].cpu() * 2.0 ** 64)
    use_path(monkeypatch, "gemv")
    out, args = check(1, 4, 96, 64, 2, torch.float32, seed=8)
    monkeypatch.setattr(MOE_KERNEL_MODULES[0], "GROUP_KERNEL_MAX_PAIRS", 0)
    torch.testing.assert_close(moe(*args, LIMIT), out, rtol=0, atol=0)


@pytest.mark.skipif(DEVICE != "cpu", reason="the GPU runs bf16 everywhere (test_moe_batch1_paths_match_ref)")
@pytest.mark.parametrize("path", ["gemv", "dot_scaled"])
def test_moe_bf16_paths_in_the_interpreter(path, monkeypatch):
    """bf16, the model's dtype, on CPU: the interpreter's tl.dot on bf16 is wrong, but the GEMV kernels use no dot
    and tl.dot_scaled decodes in fp32 there, so both paths run; its fp32 -> bf16 conversion truncates instead of
    rounding (1 + 2**-8 + 2**-10 -> 1), which doubles the rounding error against the float64 truth: allowed 8x
    the torch op's error instead of 4x."""
    if path == "dot_scaled" and not kernels_mxfp4.mx_dot_available():
        pytest.skip("this triton's interpreter has no tl.dot_scaled (3.6)")
    use_path(monkeypatch, path)
    for N, E, C, I, A in [(1, 4, 96, 64, 2), (3, 6, 320, 192, 4)]:
        check(N, E, C, I, A, torch.bfloat16, seed=N, slack=8, atol=1e-3)


@pytest.mark.parametrize("bn,bk", [(16, 512), (64, 128), (32, 64)])
@pytest.mark.parametrize("E,C,I,A", [(4, 96, 96, 2), (3, 608, 160, 1), (2, 64, 32, 2)])
def test_moe_gemv_row_and_k_tails(E, C, I, A, bn, bk, monkeypatch):
    """The GEMV kernels mask rows only when BLOCK_N does not divide the matrix (C = 96 or I = 160 with 64-row
    blocks) and K only in the last step when BLOCK_K does not divide it (a tail, or K below one step)."""
    use_path(monkeypatch, "gemv")
    monkeypatch.setattr(tuning, "GEMV_CONFIG", dict(tuning.GEMV_CONFIG, BLOCK_N_UP=bn, BLOCK_N_DOWN=bn, BLOCK_K=bk))
    for dtype in DTYPES:
        check(2, E, C, I, A, dtype, seed=C + I + bn)


@pytest.mark.parametrize("N,E,A", [(2, 3, 2), (4, 4, 4), (5, 2, 1), (9, 6, 3)])
def test_moe_gemv_several_tokens(N, E, A, monkeypatch):
    """The GEMV kernels with several tokens: experts routed by more than one token get one tile per pair, each
    token's x row from the grouping kernel (fp32 and fp16; bf16 on a GPU)."""
    use_path(monkeypatch, "gemv")
    for dtype in DTYPES:
        check(N, E, 64, 96, A, dtype, seed=N * E)


@pytest.mark.parametrize("magnitude", [1e-15, 1e-6, 1e4, 1e15])
def test_moe_gemv_keeps_precision_at_any_x_magnitude(magnitude, monkeypatch):
    """The GEMV kernels decode FP4 as fp4 * 2**-126 and pre-scale x (and h) by 2**64 (_fp4_pair): tiny and huge x
    keep fp32 precision relative to the output (biases zero so they do not dominate; the SwiGLU clamp bounds h
    as in the model, so h stays far below the 2**64 where its pre-scaling would overflow)."""
    use_path(monkeypatch, "gemv")
    E, C, I, A = 4, 96, 64, 2
    w1b, w1s, b1, w2b, w2s, b2 = make_experts(E, C, I, torch.float32, seed=5)
    b1, b2 = b1 * 0, b2 * 0
    ids, w = make_routing(1, E, A, seed=5)
    x = torch.randn(1, C, generator=torch.Generator().manual_seed(6)).to(DEVICE) * magnitude
    out = moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    gold = moe_ref(x.double(), ids, w.double(), w1b, w1s, b1.double(), w2b, w2s, b2.double(), LIMIT)
    assert torch.isfinite(out).all()
    rel = ((out.double() - gold).abs().max() / gold.abs().max()).item()
    assert gold.abs().max() > 0 and rel < 1e-5, rel


@triton.jit
def _fp4_pair_kernel(words_ptr, out_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    words = tl.load(words_ptr + offs).to(tl.uint32, bitcast=True)
    for j in tl.static_range(4):
        lo, hi = kernels_mxfp4.fp4_pair(words, j)
        tl.store(out_ptr + offs * 8 + j, lo)
        tl.store(out_ptr + offs * 8 + j + 4, hi)


def test_fp4_pair_every_code_at_every_position():
    """The GEMV kernels' decode: every FP4 code at each of a word's 8 positions gives exactly fp4 * 2**-126
    (0.5 as the fp32 subnormal 2**-127), with the release's order: code j of a word is element j of its 8."""
    codes = torch.arange(16, dtype=torch.int64)
    rows = torch.stack([torch.roll(codes, s)[:8] for s in range(16)])  # (16, 8): every code at every position
    words = (rows << (4 * torch.arange(8))).sum(1)  # code j in nibble j
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
    out = torch.empty(16 * 8, dtype=torch.float32, device=DEVICE)
    _fp4_pair_kernel[(1,)](words.to(DEVICE), out, N=16)
    want = torch.tensor(FP4_VALUES, dtype=torch.float64)[rows].reshape(-1) * 2.0 ** -126
    assert torch.equal(out.cpu().double(), want)
    assert torch.equal(torch.signbit(out.cpu()), torch.signbit(want.float()))  # -0.0 (code 8) keeps its sign


def test_moe_matches_engine_torch_op():
    ops = pytest.importorskip("optimized.ops")
    out, args = check(7, 6, 64, 64, 2, torch.float32, seed=3)
    torch.testing.assert_close(out, ops.get_backend("torch").moe(*args, LIMIT), rtol=1e-4, atol=1e-4)


class _Launches:
    """Replaces a kernel of optimized.kernels.moe_*: records the kernel's name at each launch, then launches it."""

    def __init__(self, name, kernel, log):
        self.name, self.kernel, self.log = name, kernel, log

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append(self.name)
            return self.kernel[grid](*args, **kwargs)
        return launch


def record_launches(monkeypatch):
    """The launches of the MoE's kernels (kernels/moe_*.py), and of the RMSNorm kernel (kernels/rms_norm.py)."""
    log = []
    for module in MOE_KERNEL_MODULES:
        for name in dir(module):
            if name.startswith("_") and name.endswith("_kernel"):
                monkeypatch.setattr(module, name, _Launches(name, getattr(module, name), log))
    norm = importlib.import_module("optimized.kernels.rms_norm")
    monkeypatch.setattr(norm, "_rms_norm_kernel", _Launches("_rms_norm_kernel", norm._rms_norm_kernel, log))
    return log


def small_case(path, dtype, seed, x_scale, gemv_tokens):
    """A small call for one path: x (gemv_tokens rows on the GEMV path, 5 on the tensor-core one; 6 experts, top 3),
    its routing and experts, and the generator x came from (for a test's further tensors)."""
    N, E, C, I, A = (gemv_tokens if path == "gemv" else 5), 6, 96, 64, 3
    experts = make_experts(E, C, I, dtype, seed=seed)
    ids, w = make_routing(N, E, A, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.randn(N, C, generator=g) * x_scale).to(dtype).to(DEVICE)
    return x, g, ids, w, experts


@pytest.mark.parametrize("path", ["gemv", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_moe_residual_is_the_add_torch_would_do(path, dtype, monkeypatch):
    """moe(..., residual=r) is bitwise r + moe(...): the add happens in the op's last kernel (the GEMV down kernel,
    or the sum over slots), on the sum rounded to x's dtype, as the engine's x + y did. And it costs no launch:
    at batch 1 the GEMV path is 3 kernels (group, up, down: the down kernel sums the A experts), the
    tensor-core path 4 (its sum kernel adds the residual)."""
    use_path(monkeypatch, path)
    x, g, ids, w, (w1b, w1s, b1, w2b, w2s, b2) = small_case(path, dtype, seed=11, x_scale=0.5, gemv_tokens=1)
    r = (torch.randn(*x.shape, generator=g) * 3).to(dtype).to(DEVICE)
    plain = moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    log = record_launches(monkeypatch)
    fused = moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=r)
    assert torch.equal(fused, r + plain)
    want = (["_group_kernel", "_moe_up_gemv_kernel", "_moe_down_gemv_kernel"] if path == "gemv"
            else ["_group_kernel", "_moe_up_kernel", "_moe_down_kernel", "_sum_kernel"])
    assert log == want
    torch.testing.assert_close(moe_ref(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=r),
                               r + moe_ref(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT), rtol=0, atol=0)
    with pytest.raises(ValueError, match="residual"):
        moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=r[:, :-1])
    with pytest.raises(ValueError, match="residual"):
        moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=r.double())


@pytest.mark.parametrize("path", ["gemv", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_moe_applies_the_block_norm(path, dtype, monkeypatch):
    """moe(x, ..., norm_scale=s) is moe(rms_norm(x, s), ...): at small batches the grouping kernel normalizes x as
    it lays it out for the GEMV kernels (3 launches still), else the RMSNorm kernel runs first. Up to the order of
    the norm's fp32 sum of squares (a t rounded the other way now and then)."""
    from optimized.kernels.rms_norm import rms_norm_ref
    use_path(monkeypatch, path)
    x, g, ids, w, (w1b, w1s, b1, w2b, w2s, b2) = small_case(path, dtype, seed=15, x_scale=3, gemv_tokens=2)
    s = (1 + 0.2 * torch.randn(x.shape[1], generator=g)).to(DEVICE)
    log = record_launches(monkeypatch)
    out = moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=x, norm_scale=s)
    if path == "gemv":
        assert log == ["_group_kernel", "_moe_up_gemv_kernel", "_moe_down_gemv_kernel"]
    t = rms_norm_ref(x, s)
    want = x + moe(t, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    tol = 1e-5 if dtype == torch.float32 else 4e-3
    torch.testing.assert_close(out, want, rtol=tol, atol=tol * want.abs().max().item())
    assert not torch.allclose(out, x + moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT), rtol=0.05, atol=0.05)
    torch.testing.assert_close(moe_ref(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, norm_scale=s),
                               moe_ref(t, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT), rtol=0, atol=0)
    with pytest.raises(ValueError, match="norm_scale"):
        moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, norm_scale=s[:-1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("N,E,A", [(1, 8, 4), (3, 6, 2), (2, 4, 4), (20, 6, 2)])
def test_routed_moe_is_the_ops_in_turn(N, E, A, dtype, monkeypatch):
    """routed_moe (the MoE block after its input) gives exactly what linear (router, with the norm), route and
    moe (with the norm and the residual) give in turn: the fused kernel runs the same code (kernels/linear.py's
    rows, route.py's top-k, the grouping, the x layout), its last program routing every token. At small batches it
    is 3 launches (router kernel, up, down); beyond (20 tokens, or 8 pairs on 4 experts) the ops in turn, the
    RMSNorm run once."""
    from optimized.kernels.linear import linear as linear_op
    from optimized.kernels.moe import routed_moe
    C, I = 96, 64
    w1b, w1s, b1, w2b, w2s, b2 = make_experts(E, C, I, dtype, seed=17)
    g = torch.Generator().manual_seed(18)
    x = (torch.randn(N, C, generator=g) * 2).to(dtype).to(DEVICE)
    gw = (torch.randn(E, C, generator=g) * C ** -0.5).to(dtype).to(DEVICE)
    gb = (torch.randn(E, generator=g) * 0.1).to(dtype).to(DEVICE)
    s = (1 + 0.1 * torch.randn(C, generator=g)).to(DEVICE)
    log = record_launches(monkeypatch)
    out, logits, ids, w = routed_moe(x, gw, gb, s, A, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=x)
    fused = kernels_moe.gemv_pays(N, A, E)  # (2, 4, 4): 8 pairs on 4 experts, the tensor-core kernels
    if fused:
        assert log == ["_moe_router_kernel", "_moe_up_gemv_kernel", "_moe_down_gemv_kernel"]
    else:  # the RMSNorm kernel once: for the tensor-core experts (2 rows: the router's linear kernel has it in its
        assert log.count("_rms_norm_kernel") == 1, log  # prologue) or shared by the router and the experts (20 rows)
    log.clear()
    want_logits = linear_op(x, gw, gb, norm_scale=s)
    want_ids, want_w = route(want_logits, A)
    want = moe(x, want_ids, want_w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=x, norm_scale=s)
    assert logits.dtype == dtype and ids.dtype == torch.int32 and w.dtype == torch.float32
    assert torch.equal(logits, want_logits) and torch.equal(ids, want_ids) and torch.equal(w, want_w)
    assert torch.equal(out, want)
    # and against the plain torch steps (moe_ref on the routed ids)
    t = torch.nn.functional.rms_norm(x.float(), (C,), s, 1e-5).to(dtype)
    ref = moe_ref(t, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT, residual=x)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("path", ["gemv", "dot"])
def test_moe_same_expert_in_two_slots(path, monkeypatch):
    """The op takes any ids, not only the router's distinct ones: a token routed twice to one expert gets both
    slots' terms (the GEMV down kernel reads that expert's rows twice in one K step)."""
    use_path(monkeypatch, path)
    E, C, I, A = 4, 64, 96, 3
    w1b, w1s, b1, w2b, w2s, b2 = make_experts(E, C, I, torch.float32, seed=13)
    ids = torch.tensor([[2, 2, 0], [1, 3, 1]], dtype=torch.int32, device=DEVICE)
    w = torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]], device=DEVICE)
    x = torch.randn(2, C, generator=torch.Generator().manual_seed(14)).to(DEVICE)
    out = moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    gold = moe_ref(x.double(), ids, w.double(), w1b, w1s, b1.double(), w2b, w2s, b2.double(), LIMIT)
    torch.testing.assert_close(out.double(), gold, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("N,E,A,BM", [(1, 4, 4, 16), (9, 5, 3, 4), (50, 3, 2, 16), (33, 64, 4, 16), (64, 128, 4, 16)])
def test_group_by_expert_covers_every_pair_once(N, E, A, BM):
    """The torch grouping (prefill) and the one-program kernel (decode) give the same stable order and tiles,
    and the tiles cover every (token, slot) pair exactly once, each within one expert."""
    g = torch.Generator().manual_seed(N + E)
    ids = torch.stack([torch.randperm(E, generator=g)[:A] for _ in range(N)]).int().to(DEVICE)
    order, te, start, stop = (t.cpu() for t in group_by_expert(ids, E, BM))
    flat = ids.reshape(-1).cpu()
    assert torch.equal(order, torch.sort(flat.long(), stable=True).indices.int())
    seen = []
    for t in range(te.numel()):
        rows = order[start[t]:stop[t]].tolist()
        assert len(rows) <= BM
        assert all(flat[p] == te[t] for p in rows)
        seen += rows
    assert sorted(seen) == list(range(N * A))
    k_order, k_te, k_start, k_stop = (t.cpu() for t in group_by_expert_kernel(ids, E, BM))
    assert torch.equal(k_order, order)
    used = stop > start
    assert torch.equal(k_stop - k_start, stop - start)
    assert torch.equal(k_te[used], te[used]) and torch.equal(k_start[used], start[used])


def test_dequant_ref_matches_reference_decode():
    """The plain-torch decode that moe_ref uses equals reference/mxfp4.py in float64, NaN and 2**-127 included."""
    g = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 256, (3, 5, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(100, 150, (3, 5), dtype=torch.uint8, generator=g)
    scales[0, 0], scales[1, 1] = 0, 255
    want = torch.from_numpy(mxfp4_numpy.decode(blocks.numpy(), scales.numpy()))
    got = mxfp4_dequant_ref(blocks, scales, torch.float64)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(want).any()
    assert torch.equal(got[~torch.isnan(got)], want[~torch.isnan(want)])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # 6 * 2**127 is inf in fp32
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kernel_decode_every_code_and_scale(dtype):
    """The MoE kernels' in-register FP4 decode (mxfp4_dequant runs it alone) against the reference decode,
    for all 256 byte values under all 256 scales (0 is the subnormal 2**-127, 255 is NaN)."""
    blocks = torch.arange(256, dtype=torch.uint8).reshape(16, 16).repeat(256, 1, 1)  # (256 rows, 16 blocks, 16)
    scales = torch.arange(256, dtype=torch.uint8)[:, None].repeat(1, 16)  # row r uses scale r
    got = mxfp4_dequant(blocks.to(DEVICE), scales.to(DEVICE), dtype).cpu()
    want = torch.from_numpy(mxfp4_numpy.decode(blocks.numpy(), scales.numpy()))
    # the float64 truth rounded once to dtype: exact where representable (fp32 subnormals included), the
    # overflow of 6 * 2**127 to inf and the NaN scale as NaN
    rounded = want.to(dtype)
    assert torch.equal(torch.isnan(got), torch.isnan(rounded))
    assert torch.equal(got[~torch.isnan(got)], rounded[~torch.isnan(rounded)])
    assert torch.isnan(got[255]).all()
    if dtype != torch.float16:  # scale 0 (2**-127) is not flushed to zero: 14 of 16 codes are nonzero
        assert (got[0] != 0).sum() == 14 * 32


def test_moe_bad_input():
    w1b, w1s, b1, w2b, w2s, b2 = make_experts(4, 64, 64, torch.float32, seed=0)
    x = torch.randn(2, 64, device=DEVICE)
    ids = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32, device=DEVICE)
    w = torch.full((2, 2), 0.5, device=DEVICE)
    with pytest.raises(ValueError, match="w2_blocks"):
        moe(x, ids, w, w1b, w1s, b1, w2b[:, :32], w2s, b2, LIMIT)
    with pytest.raises(ValueError, match="weights"):
        moe(x, ids, w[:, :1], w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    with pytest.raises(ValueError, match="uint8"):
        moe(x, ids, w, w1b.int(), w1s, b1, w2b, w2s, b2, LIMIT)
    if DEVICE == "cpu":  # on a GPU the same check is a device-side assert (no host sync)
        with pytest.raises(ValueError, match="expert ids"):
            moe(x, ids + 1, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)


# ----------------------------------------------------------------------------------------------- GPU only
@needs_cuda
@pytest.mark.parametrize("N", [1, 100])  # the grouping kernel's device assert; the torch grouping's _assert_async
def test_moe_out_of_range_ids_fail_loudly_on_cuda(N):
    """A device-side assert poisons the CUDA context, so the bad call runs in a child process."""
    import subprocess
    import sys
    code = (f"import torch; from optimized.kernels.moe import moe; from tests.test_kernels_moe import make_experts\n"
            f"e = make_experts(4, 64, 64, torch.bfloat16, 0)\n"
            f"ids = torch.full(({N}, 2), 7, dtype=torch.int32, device='cuda')\n"
            f"moe(torch.randn({N}, 64, device='cuda', dtype=torch.bfloat16), ids, torch.ones({N}, 2, device='cuda'), "
            f"*e, 7.0); torch.cuda.synchronize()")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.path.join(root, "tests")])))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "assert" in proc.stderr.lower(), proc.stderr[-2000:]


REAL = {"20b": dict(E=32, C=2880, I=2880, A=4), "120b": dict(E=128, C=2880, I=2880, A=4)}


@needs_cuda
@pytest.mark.parametrize("shape", ["20b", "120b"])
@pytest.mark.parametrize("N", [1, 7, 64, 300])
def test_moe_real_shapes_bf16(shape, N):
    s = REAL[shape]
    check(N, s["E"], s["C"], s["I"], s["A"], torch.bfloat16, seed=N)


@needs_cuda
@pytest.mark.parametrize("N", [1, 8])  # the GEMV kernels (batch 1) and the tensor-core ones
def test_route_and_moe_capture_in_a_cuda_graph(N):
    s = REAL["20b"]
    w1b, w1s, b1, w2b, w2s, b2 = make_experts(s["E"], s["C"], s["I"], torch.bfloat16, seed=9)
    x = torch.randn(N, s["C"], device=DEVICE, dtype=torch.bfloat16)
    logits = torch.randn(N, s["E"], device=DEVICE)

    def step():
        ids, w = route(logits, s["A"])
        return moe(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)

    step()  # compiles the kernels outside the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    logits.copy_(torch.randn(N, s["E"], device=DEVICE))  # new routing, replayed without re-capture
    graph.replay()
    torch.cuda.synchronize()
    ids, w = route(logits, s["A"])
    want = moe_ref(x, ids, w, w1b, w1s, b1, w2b, w2s, b2, LIMIT)
    assert (captured.float() - want.float()).abs().max() <= 0.05 * want.float().abs().max() + 0.1
