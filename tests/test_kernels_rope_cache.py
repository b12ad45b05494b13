"""optimized/kernels/rope_cache.py: the decode prologue (RoPE on q and k, k/v/position into the cache) against
rope_cache_write_ref, which is the engine's torch decode path; and the engine on backend "triton" decoding
with it against the torch backend.

Tolerance: rotated values may differ by one rounding of the activation dtype (a GPU compiler may fuse the
products into FMAs); v and positions are copies (exact); slots not written stay untouched (exact).
CPU: Triton interpreter in fp32/fp16, and bf16 allowing for its truncating conversion. GPU: also bf16 and
gpt-oss-20b's head shapes."""
import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES, needs_cuda  # before optimized.kernels: the interpreter without CUDA
from optimized.kernels.rope_cache import rope_cache_write, rope_cache_write_ref
from optimized.rope import cos_sin, inv_freq_and_concentration


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
    with pytest.raises(ValueError, match=r"qkv must be \(B, 1, \(H \+ 2K\) \* D\)"):
        rope_cache_write(qkv, cos, sin, pos, *cache, 4, 1, 16)
    with pytest.raises(ValueError, match="cos/sin must be"):
        rope_cache_write(qkv, cos[..., :4], sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="must share a dtype"):
        rope_cache_write(qkv.half(), cos, sin, pos, *cache, 4, 2, 16)
    with pytest.raises(ValueError, match="k/v cache must be"):
        rope_cache_write(qkv, cos, sin, pos, cache[0][:, :4], cache[1], cache[2], 4, 2, 16)


def test_engine_decodes_with_it_as_with_the_torch_backend(tmp_path):
    """Backend "triton" decodes through rope_cache_write (counted) and gives the torch backend's float32
    logits, step after step, across the ring of a windowed layer."""
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
    kernel = model.ops.rope_cache_write
    model.ops.rope_cache_write = lambda *a: calls.append(1) or kernel(*a)
    torch_model = Model(model.weights)
    assert torch_model.ops.rope_cache_write is None and ops.get_backend("triton").rope_cache_write is kernel
    tokens = [5, 17, 3, 60, 42, 42, 7, 0, 31, 13]
    steps = {}
    for name, m in (("triton", model), ("torch", torch_model)):
        engine = Engine(m, context=16)
        cache = engine.fresh_cache(1)
        steps[name] = [engine.run(cache, [tokens[:3]])] + [engine.run(cache, [[t]]) for t in tokens[3:]]
    assert len(calls) == len(tokens[3:]) * cfg.num_hidden_layers  # every decode step, every layer
    torch.testing.assert_close(torch.stack(steps["triton"]), torch.stack(steps["torch"]), atol=1e-4, rtol=0)


@needs_cuda
@pytest.mark.parametrize("B,positions", [(1, [4095]), (8, list(range(100, 8100, 1000)))])
def test_real_shapes_bf16(B, positions):
    for S in (128, 8192):  # a sliding layer's ring, a full layer
        check(B, S, 64, 8, 64, torch.bfloat16, positions)
