"""optimized/kernels/rope_cache.py: the attention prologue (RoPE on q and k, k/v/position into the cache) at decode
and at prefill (padding, rings that keep each row's last S tokens, the new keys handed back for a ring's
[cache | new]) against rope_cache_write_ref, which is the engine's torch path; the same with the qkv projection in front
(qkv_rope_cache_write) against its torch steps; and the engine on backend "triton" decoding with them against the
torch backend.

Tolerance: rotated values may differ by one rounding of the activation dtype (a GPU compiler may fuse the
products into FMAs); v and positions are copies (exact); slots not written stay untouched (exact).
CPU: Triton interpreter in fp32/fp16, and bf16 allowing for its truncating conversion. GPU: also bf16 and
gpt-oss-20b's head shapes.
qkv_rope_cache_write sums the projection in another order than its ref (STYLE.md 9): its error against a float64
evaluation at most 4x the ref's in the same dtype, plus a small atol times the output's scale."""
import importlib

import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES, needs_cuda  # before optimized.kernels: the interpreter without CUDA
from optimized.kernels.rope_cache import (qkv_rope_cache_write, qkv_rope_cache_write_ref, rope_cache_write,
                                         rope_cache_write_ref)
from optimized.rope import cos_sin, inv_freq_and_concentration
from test_kernels_linear import ATOL, gold as gold_linear

kernels_rope_cache = importlib.import_module("optimized.kernels.rope_cache")
kernels_linear = importlib.import_module("optimized.kernels.linear")
tuning = importlib.import_module("optimized.kernels.tuning")


def setup(B, S, H, K, D, dtype, positions, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, 1, (H + 2 * K) * D, generator=g).to(dtype).to(DEVICE)
    inv_freq, conc = inv_freq_and_concentration(D, 150000.0, 32.0, 4096, 1.0, 32.0)
    pos = torch.tensor(positions, dtype=torch.int64)[:, None].to(DEVICE)
    cos, sin = cos_sin(pos, inv_freq.to(DEVICE), conc)
    cache = [torch.randn(B, S, K, D, generator=g).to(dtype).to(DEVICE) for _ in range(2)]
    cache.append(torch.randint(-1, 50, (B, S), generator=g).to(DEVICE))
    return qkv, cos, sin, pos, cache


def check(B, S, H, K, D, dtype, positions, steps=1):
    """steps: rounding steps of the dtype allowed (2 where the interpreter truncates to bf16)."""
    qkv, cos, sin, pos, cache = setup(B, S, H, K, D, dtype, positions)
    mine, ref = [t.clone() for t in cache], [t.clone() for t in cache]
    q = rope_cache_write(qkv, cos, sin, pos, *mine, H, K, D)
    q_ref = rope_cache_write_ref(qkv, cos, sin, pos, *ref, H, K, D)
    assert q.shape == (B, 1, H, D) and q.dtype == dtype
    eps = steps * torch.finfo(dtype).eps
    tol = dict(rtol=eps, atol=eps)  # one rounding step at |x| ~ 1
    torch.testing.assert_close(q, q_ref, **tol)
    torch.testing.assert_close(mine[0], ref[0], **tol)  # rotated keys at the written slots; the rest untouched
    assert torch.equal(mine[1], ref[1]) and torch.equal(mine[2], ref[2])  # values and positions: copies
    slots = pos[:, 0] % S
    rows = torch.arange(B, device=DEVICE)
    assert torch.equal(mine[2][rows, slots], pos[:, 0])
    untouched = torch.ones(B, S, dtype=torch.bool, device=DEVICE)
    untouched[rows, slots] = False
    assert torch.equal(mine[0][untouched], cache[0][untouched]) and torch.equal(mine[1][untouched], cache[1][untouched])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("B,S,H,K,D,positions", [
    (1, 8, 4, 2, 16, [0]),
    (3, 8, 4, 2, 16, [5, 8, 131071]),  # a ring: positions past S wrap (slot = pos % S), up to 2**17 - 1
    (2, 64, 8, 1, 64, [63, 17]),  # a full layer: slot = position
    (2, 16, 6, 3, 32, [100, 16]),  # G = 2, D not a power of two times 16 ... F = 16
    (1, 4, 2, 2, 12, [9]),  # F = 6: masked lanes (BLOCK_F = 8)
])
def test_matches_the_engines_torch_path(B, S, H, K, D, positions, dtype):
    check(B, S, H, K, D, dtype, positions)


@pytest.mark.skipif(DEVICE != "cpu", reason="on a GPU, test_matches_the_engines_torch_path runs bf16")
def test_bf16_in_the_interpreter():
    """bf16, the model's dtype, on CPU: no dot in this kernel, so only the interpreter's fp32 -> bf16 conversion
    differs from a GPU's (it truncates: one step of bf16 instead of half of one)."""
    check(3, 8, 4, 2, 16, torch.bfloat16, [5, 8, 131071], steps=2)
    check(2, 64, 8, 1, 64, torch.bfloat16, [63, 17], steps=2)


def test_bad_input():
    qkv, cos, sin, pos, cache = setup(1, 8, 4, 2, 16, torch.float32, [3])
    with pytest.raises(ValueError, match=r"qkv must be \(B, T >= 1, \(H \+ 2K\) \* D\)"):
        rope_cache_write(qkv, cos, sin, pos, *cache, 4, 1, 16)
    with pytest.raises(ValueError, match="positions must be integers"):
        rope_cache_write(qkv, cos, sin, pos.float(), *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="cos/sin must be"):
        rope_cache_write(qkv, cos[..., :4], sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="must share a dtype"):
        rope_cache_write(qkv.half(), cos, sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="k/v cache must be"):
        rope_cache_write(qkv, cos, sin, pos, cache[0][:, :4], cache[1], cache[2], 4, 2, 16)


def setup_prefill(B, T, S, H, K, D, dtype, positions, seed=0):
    """positions (B, T) with -1 for padding; the cache holds earlier positions of each row (a prefill continuing a
    conversation) and, on a ring, their slots."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, (H + 2 * K) * D, generator=g).to(dtype).to(DEVICE)
    inv_freq, conc = inv_freq_and_concentration(D, 150000.0, 32.0, 4096, 1.0, 32.0)
    pos = torch.tensor(positions, dtype=torch.int64).to(DEVICE)
    cos, sin = cos_sin(pos.clamp(min=0), inv_freq.to(DEVICE), conc)  # as model.py gathers them: padding at 0
    cache = [torch.randn(B, S, K, D, generator=g).to(dtype).to(DEVICE) for _ in range(2)]
    cache.append(torch.randint(-1, 50, (B, S), generator=g).to(DEVICE))
    return qkv, cos, sin, pos, cache


def check_prefill(B, T, S, H, K, D, dtype, positions, new=False, steps=1):
    """Several tokens a row against the engine's torch path; and, without it, what a ring must hold: each row's
    valid positions among its last S at slot p % S, every other slot as it was."""
    qkv, cos, sin, pos, cache = setup_prefill(B, T, S, H, K, D, dtype, positions, seed=B + T + S)
    mine, ref = [t.clone() for t in cache], [t.clone() for t in cache]
    news = [torch.full((2, B, T, K, D), 7.0, dtype=dtype, device=DEVICE) for _ in range(2)] if new else [None, None]
    if new:  # views of a [cache | new] buffer, as attention.py hands them
        buf = torch.zeros((2, B, S + T, K, D), dtype=dtype, device=DEVICE)
        news[0] = (buf[0, :, S:], buf[1, :, S:])
    q = rope_cache_write(qkv, cos, sin, pos, *mine, H, K, D, new_kv=news[0] if new else None)
    q_ref = rope_cache_write_ref(qkv, cos, sin, pos, *ref, H, K, D, new_kv=news[1] if new else None)
    eps = steps * torch.finfo(dtype).eps
    tol = dict(rtol=eps, atol=eps)
    assert q.shape == (B, T, H, D) and q.dtype == dtype
    torch.testing.assert_close(q, q_ref, **tol)
    torch.testing.assert_close(mine[0], ref[0], **tol)
    assert torch.equal(mine[1], ref[1]) and torch.equal(mine[2], ref[2])
    if new:
        torch.testing.assert_close(news[0][0], news[1][0], **tol)  # every token's rotated key, padding's too
        assert torch.equal(news[0][1], news[1][1])
        assert torch.equal(news[0][1], qkv[..., (H + K) * D:].reshape(B, T, K, D))
        assert not buf[:, :, :S].any()  # the cache half of the buffer: not the kernel's to touch
    written = torch.zeros(B, S, dtype=torch.bool, device=DEVICE)
    for b, row in enumerate(positions):
        valid = [p for p in row if p >= 0]
        for p in valid:
            if p > max(valid) - S:
                assert mine[2][b, p % S] == p
                written[b, p % S] = True
    assert written.sum() == sum(min(S, sum(p >= 0 for p in row)) for row in positions)
    for t in range(3):
        assert torch.equal(mine[t][~written], cache[t][~written])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("B,T,S,H,K,D,positions", [
    (2, 5, 64, 8, 1, 64, [[0, 1, 2, 3, 4], [-1, -1, 0, 1, 2]]),  # a full layer; left padding
    (1, 13, 8, 4, 2, 16, [list(range(5, 18))]),  # a ring of 8, 13 tokens: only the last 8 written
    (1, 13, 8, 4, 2, 16, [list(range(17, 4, -1))]),  # the same, newest first: no "last writer wins" by token order
    (3, 6, 8, 4, 2, 16, [[20, 21, 22, 23, 24, 25], [3, 4, 5, -1, -1, -1], [-1] * 6]),  # T < S; right pad; empty row
    (2, 4, 4, 6, 3, 12, [[9, 10, 11, 12], [0, -1, 1, 2]]),  # F = 6: masked lanes; H + 2K = 12 heads of 16
])
@pytest.mark.parametrize("new", [False, True], ids=["cache", "cache+new"])
def test_prefill_matches_the_engines_torch_path(B, T, S, H, K, D, positions, dtype, new):
    check_prefill(B, T, S, H, K, D, dtype, positions, new)


@pytest.mark.parametrize("heads", [4, 8])
def test_several_head_blocks_a_token(heads, monkeypatch):
    """ROPE_HEADS heads a program (20b: 5 programs a token): 12 heads in 3 full blocks, or in one full and one
    partial (masked) block; decode and prefill."""
    monkeypatch.setattr(kernels_rope_cache, "ROPE_HEADS", heads)
    check(2, 16, 6, 3, 12, torch.float32, [100, 16])
    check_prefill(2, 4, 4, 6, 3, 12, torch.float32, [[9, 10, 11, 12], [0, -1, 1, 2]], new=True)


@pytest.mark.skipif(DEVICE != "cpu", reason="on a GPU, test_prefill_matches_the_engines_torch_path runs bf16")
def test_prefill_bf16_in_the_interpreter():
    check_prefill(1, 13, 8, 4, 2, 16, torch.bfloat16, [list(range(5, 18))], new=True, steps=2)


def test_last_slots_only():
    """A ring keeps each row's last S positions (by position, not by order in the call); padding stays -1; a
    full layer (S above every position) keeps all."""
    from optimized.cache import last_slots_only
    pos = torch.tensor([[5, 6, 7, 8, 9], [9, 8, 7, 6, 5], [-1, -1, 0, 1, 2], [-1] * 5])
    assert last_slots_only(pos, 3).tolist() == [[-1, -1, 7, 8, 9], [9, 8, 7, -1, -1], [-1, -1, 0, 1, 2], [-1] * 5]
    assert torch.equal(last_slots_only(pos, 10), pos)


def test_prefill_bad_new_kv():
    qkv, cos, sin, pos, cache = setup_prefill(1, 3, 8, 4, 2, 16, torch.float32, [[0, 1, 2]])
    kn = torch.empty(1, 3, 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match="new_kv must be a pair"):
        rope_cache_write(qkv, cos, sin, pos, *cache, 4, 2, 16, new_kv=kn)
    with pytest.raises(ValueError, match=r"v_new must be \(B, T, K, D\)"):
        rope_cache_write(qkv, cos, sin, pos, *cache, 4, 2, 16, new_kv=(kn, kn[:, :2]))
    with pytest.raises(ValueError, match=r"k_new must be .*float32"):
        rope_cache_write(qkv, cos, sin, pos, *cache, 4, 2, 16, new_kv=(kn.half(), kn))
    with pytest.raises(ValueError, match="same strides"):
        rope_cache_write(qkv, cos, sin, pos, *cache, 4, 2, 16,
                         new_kv=(kn, torch.empty(3, 1, 2, 16, device=DEVICE).transpose(0, 1)))
    with pytest.raises(ValueError, match=r"cos/sin must be \(B, T, F\)"):
        rope_cache_write(qkv, cos[:, :2], sin[:, :2], pos, *cache, 4, 2, 16)


def gold_prologue(x, w, b, norm_scale, cos, sin, H, K, D):
    """float64, no rounding in between: q (B, 1, H, D), k and v (B, K, D) of the qkv projection (test_kernels_linear's
    gold), rotated."""
    qkv = gold_linear(x, w, b, None, norm_scale)  # (B, 1, W)
    B, F = x.shape[0], D // 2
    heads = qkv.reshape(B, H + 2 * K, D)
    c, s = cos.double().reshape(B, 1, F), sin.double().reshape(B, 1, F)
    x1, x2 = heads[..., :F], heads[..., F:]
    rot = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return rot[:, :H].reshape(B, 1, H, D), rot[:, H:H + K], heads[:, H + K:]


def check_qkv(B, S, H, K, D, C, dtype, positions, w_dtype=None, bias=True, norm=True, seed=0):
    """qkv_rope_cache_write against its torch steps: q, the written slots' k and v within STYLE.md 9's bound of a
    float64 evaluation, positions and untouched slots exact."""
    _, cos, sin, pos, cache = setup(B, S, H, K, D, dtype, positions, seed)
    g = torch.Generator().manual_seed(seed + 1)
    W, w_dtype = (H + 2 * K) * D, w_dtype or dtype
    x = (torch.randn(B, 1, C, generator=g) * 2).to(dtype).to(DEVICE)
    w = (torch.randn(W, C, generator=g) * C ** -0.5).to(w_dtype).to(DEVICE)
    b = (torch.randn(W, generator=g) * 0.1).to(w_dtype).to(DEVICE) if bias else None
    sc = (1 + 0.1 * torch.randn(C, generator=g)).to(DEVICE) if norm else None
    mine, ref = [t.clone() for t in cache], [t.clone() for t in cache]
    q = qkv_rope_cache_write(x, w, b, sc, cos, sin, pos, *mine, H, K, D)
    q_ref = qkv_rope_cache_write_ref(x, w, b, sc, cos, sin, pos, *ref, H, K, D)
    assert q.shape == (B, 1, H, D) and q.dtype == dtype
    rows, slots = torch.arange(B, device=DEVICE), pos[:, 0] % S
    for name, got, base, want in zip(("q", "k", "v"), (q, mine[0][rows, slots], mine[1][rows, slots]),
                                     (q_ref, ref[0][rows, slots], ref[1][rows, slots]),
                                     gold_prologue(x, w, b, sc, cos, sin, H, K, D)):
        err = (got.double() - want).abs().max().item()
        base_err = (base.double() - want).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        assert err <= 4 * base_err + ATOL[dtype] * scale, (name, err, base_err, scale)
    assert torch.equal(mine[2], ref[2]) and torch.equal(mine[2][rows, slots], pos[:, 0])
    untouched = torch.ones(B, S, dtype=torch.bool, device=DEVICE)
    untouched[rows, slots] = False
    assert torch.equal(mine[0][untouched], cache[0][untouched]) and torch.equal(mine[1][untouched], cache[1][untouched])
    return q


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("B,S,H,K,D,C,positions", [
    (1, 8, 4, 2, 16, 64, [0]),  # F = 8: P = 4 pairs a program, 2 programs a head
    (3, 8, 4, 2, 16, 96, [5, 8, 131071]),  # a ring, 3 rows; C = 96: 3 steps of BLOCK_C = 32
    (4, 64, 8, 1, 64, 160, [63, 17, 0, 40]),  # a full layer, LINEAR_MAX_ROWS rows, 5 steps
    (2, 16, 6, 3, 12, 40, [100, 16]),  # F = 6: P = 2; C = 40: a tail step
    (1, 4, 2, 1, 10, 32, [9]),  # F = 5: P = 1
])
@pytest.mark.parametrize("fused", ["norm+bias", "plain"])
def test_qkv_matches_the_torch_steps(B, S, H, K, D, C, positions, dtype, fused, monkeypatch):
    monkeypatch.setattr(tuning, "LINEAR_CONFIG", dict(tuning.LINEAR_CONFIG, BLOCK_C=32))
    check_qkv(B, S, H, K, D, C, dtype, positions, bias="bias" in fused, norm="norm" in fused, seed=B + D + C)


def test_qkv_pairs_a_program():
    """Each program rotates P pairs: BLOCK_O / 2 where it divides F, else the largest power of 2 that does."""
    assert tuning.LINEAR_CONFIG["BLOCK_O"] == 8
    assert [kernels_rope_cache._pairs_a_program(F) for F in (32, 8, 6, 5, 2, 1)] == [4, 4, 2, 1, 2, 1]


def test_qkv_float32_x_with_bf16_weights():
    """A float32 model keeps its bf16-stored matrices in bf16 (checkpoint.placed_dtype): widened exactly."""
    check_qkv(2, 8, 4, 2, 16, 64, torch.float32, [3, 12], w_dtype=torch.bfloat16)


def test_qkv_many_rows_take_two_launches():
    """Beyond LINEAR_MAX_ROWS rows: linear (cuBLAS) then rope_cache_write; the same contract."""
    n = kernels_linear.LINEAR_MAX_ROWS + 2
    check_qkv(n, 8, 4, 2, 16, 64, torch.float32, list(range(3, 3 + 7 * n, 7)))


def test_qkv_bad_input():
    _, cos, sin, pos, cache = setup(1, 8, 4, 2, 16, torch.float32, [3])
    x, w, b, sc = torch.randn(1, 1, 32), torch.randn(128, 32), torch.randn(128), torch.ones(32)
    x, w, b, sc = x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), sc.to(DEVICE)
    with pytest.raises(ValueError, match=r"w \(\(H \+ 2K\) \* D, C\)"):
        qkv_rope_cache_write(x, w[:64], b, sc, cos, sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="b must be"):
        qkv_rope_cache_write(x, w, b[:64], sc, cos, sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="norm_scale must be"):
        qkv_rope_cache_write(x, w, b, sc.half(), cos, sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="must share a dtype"):
        qkv_rope_cache_write(x.half(), w.half(), b.half(), sc, cos, sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="cos/sin must be"):
        qkv_rope_cache_write(x, w, b, sc, cos[..., :4], sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="k/v cache must be"):
        qkv_rope_cache_write(x, w, b, sc, cos, sin, pos, cache[0][:, :4], cache[1], cache[2], 4, 2, 16)


@pytest.mark.parametrize("op", ["qkv_rope_cache_write", "rope_cache_write"])
def test_engine_decodes_with_it_as_with_the_torch_backend(tmp_path, op):
    """Backend "triton" decodes through the op (counted; rope_cache_write with qkv_rope_cache_write switched off, as
    the bench's triton-split-qkv; rope_cache_write also takes the 3-token prefill) and gives the torch backend's
    float32 logits, step after step, across the ring of a windowed layer."""
    from optimized import ops
    from optimized.generate import Engine
    from optimized.model import Model
    from reference.config import Config
    from reference.writer import write_checkpoint
    cfg = Config(num_hidden_layers=2, num_experts=4, experts_per_token=2, vocab_size=67, hidden_size=64,
                 intermediate_size=32, swiglu_limit=7.0, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
                 sliding_window=4, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
                 rope_ntk_alpha=1.0, rope_ntk_beta=32.0)
    path = write_checkpoint(tmp_path / "tiny", cfg, seed=5)
    model = Model.load(path, DEVICE, torch.float32, backend="triton")
    calls = []
    kernel = getattr(model.ops, op)
    assert getattr(ops.get_backend("triton"), op) is kernel
    if op == "rope_cache_write":
        model.ops.qkv_rope_cache_write = None
    setattr(model.ops, op, lambda *a, **kw: calls.append(a[0].shape[1]) or kernel(*a, **kw))  # tokens a row
    torch_model = Model(model.weights)
    assert torch_model.ops.rope_cache_write is None and torch_model.ops.qkv_rope_cache_write is None
    tokens = [5, 17, 3, 60, 42, 42, 7, 0, 31, 13]
    steps = {}
    for name, m in (("triton", model), ("torch", torch_model)):
        engine = Engine(m, context=16)
        cache = engine.fresh_cache(1)
        steps[name] = [engine.run(cache, [tokens[:3]])] + [engine.run(cache, [[t]]) for t in tokens[3:]]
    decoded = [1] * len(tokens[3:]) * cfg.num_hidden_layers  # every decode step, every layer
    assert calls == ([3] * cfg.num_hidden_layers if op == "rope_cache_write" else []) + decoded  # and the prefill
    torch.testing.assert_close(torch.stack(steps["triton"]), torch.stack(steps["torch"]), atol=1e-4, rtol=0)


@needs_cuda
@pytest.mark.parametrize("B,positions", [(1, [4095]), (8, list(range(100, 8100, 1000)))])
def test_real_shapes_bf16(B, positions):
    for S in (128, 8192):  # a sliding layer's ring, a full layer
        check(B, S, 64, 8, 64, torch.bfloat16, positions)


@needs_cuda
@pytest.mark.parametrize("B,positions", [(1, [4095]), (4, [100, 1100, 2100, 8000])])
def test_qkv_real_shapes_bf16(B, positions):
    """gpt-oss's qkv (2880 -> 64 q + 8 k + 8 v heads of 64) with its RMSNorm, RoPE and cache write, batch 1 and 4."""
    for S in (128, 8192):  # a sliding layer's ring, a full layer
        check_qkv(B, S, 64, 8, 64, 2880, torch.bfloat16, positions, seed=S + B)
