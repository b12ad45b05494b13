"""optimized/kernels/attention.py: the Triton attention (sinks, sliding window, GQA, position masks, split-KV
decode) against attention_ref.

Tolerance, relative to a baseline (STYLE.md 9): the kernel's error against a float64 evaluation must be at most
4x the error of the plain torch op in the same dtype (attention_ref) plus a small atol.
CPU: Triton interpreter in fp32/fp16 on small shapes. GPU: also bf16 and the real gpt-oss shapes."""
import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES, needs_cuda  # before optimized.kernels: the interpreter without CUDA
from optimized.kernels.attention import _attention, attention, attention_ref

ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def make_qkv(B, T, S, H, K, D, dtype, seed, sink_scale=2.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, n, h, D, generator=g).to(dtype).to(DEVICE) for n, h in ((T, H), (S, K), (S, K)))
    sinks = (torch.randn(H, generator=g) * sink_scale).to(DEVICE)
    return q, k, v, sinks


def check(q, k, v, sinks, window, q_pos, k_pos, num_splits=None):
    D = q.shape[-1]
    args = (q, k, v, sinks, D ** -0.5, window, q_pos.to(DEVICE), k_pos.to(DEVICE))
    out = _attention(*args, num_splits=num_splits)
    assert out.shape == q.shape and out.dtype == q.dtype
    base = attention_ref(*args)
    gold = attention_ref(*(a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args))
    err = (out.double() - gold).abs().max().item()
    base_err = (base.double() - gold).abs().max().item()
    assert err <= 4 * base_err + ATOL[q.dtype], (err, base_err)
    return out, gold


def contiguous(B, T, S, offset=0):
    """Prefill/decode over a plain cache: keys at positions offset..offset+S-1, the T queries the last ones."""
    k_pos = torch.arange(S).repeat(B, 1) + offset
    return k_pos[:, S - T:].clone(), k_pos


# (B, T, S, H, K, D, window): lengths around and beyond the window, GQA with G = 2, 3 (not a power of two), 8
PREFILL = [
    (1, 7, 7, 4, 2, 16, 8),
    (2, 8, 8, 4, 2, 16, 8),
    (1, 9, 9, 4, 2, 16, 8),
    (2, 40, 40, 6, 2, 32, 8),
    (1, 33, 33, 8, 1, 64, 0),
    (1, 80, 80, 16, 2, 64, 16),  # several query blocks and key blocks, some skipped
    (2, 5, 21, 4, 2, 16, 0),  # a chunk of prefill after 16 cached tokens
    (1, 6, 6, 4, 2, 8, 1),  # window 1 (each query sees only itself), head_dim 8 (padded to the dot's 16)
    # fp16/bf16 at >= 9 tokens: tiles of 128 rows x 128 keys (attention.tiles)
    (1, 300, 300, 4, 2, 16, 100),  # windowed: 5 query blocks x 5 key blocks of 64; the window across blocks
    (1, 300, 300, 4, 2, 16, 0),  # 5 query blocks x 3 key blocks of 128
    (2, 150, 400, 8, 1, 32, 0),  # after 250 cached: whole 128-key blocks before the diagonal (the unmasked loop)
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("B,T,S,H,K,D,window", PREFILL)
def test_prefill_matches_ref(B, T, S, H, K, D, window, dtype):
    q, k, v, sinks = make_qkv(B, T, S, H, K, D, dtype, seed=T * 7 + S)
    check(q, k, v, sinks, window, *contiguous(B, T, S))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("window", [0, 64])
def test_split_keys_for_a_few_tokens(window, dtype):
    """12 tokens after 388 cached (a short chunk, or speculative tokens), G = 8: fp16/bf16 hold them in one query
    block (a 128-row tile, 128 keys a step), so the keys may be split over programs, merged by the last one; fp32's
    64-row tile holds 8 tokens: two query blocks, no split."""
    q, k, v, sinks = make_qkv(2, 12, 400, 16, 2, 32, dtype, seed=12 + window)
    for num_splits in (None, 3) if dtype != torch.float32 else (None,):
        check(q, k, v, sinks, window, *contiguous(2, 12, 400), num_splits=num_splits)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("S,window", [(1, 0), (9, 8), (150, 0), (150, 128), (200, 64)])
@pytest.mark.parametrize("num_splits", [None, 1, 3])
def test_decode_matches_ref(S, window, num_splits, dtype):
    q, k, v, sinks = make_qkv(2, 1, S, 8, 1, 64, dtype, seed=S + window)
    check(q, k, v, sinks, window, *contiguous(2, 1, S), num_splits=num_splits)


def test_split_decode_is_one_launch_and_leaves_the_counters_at_zero(monkeypatch):
    """Split-KV decode: the last split program of each (row, kv head) merges the partial states (grid_sync.py), so
    the op is one launch; its counters are back at 0 after each call, so the next call (a graph replay) starts
    clean. Two calls in a row, with different splits, both right."""
    import importlib
    from optimized.kernels.grid_sync import counters
    attn_mod = importlib.import_module("optimized.kernels.attention")  # the module (the package exports the op)
    launches = []
    kernel = attn_mod._attn_fwd_kernel

    class Record:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]
    monkeypatch.setattr(attn_mod, "_attn_fwd_kernel", Record())
    B, S, H, K = 3, 150, 4, 2
    q, k, v, sinks = make_qkv(B, 1, S, H, K, 16, torch.float32, seed=21)
    q_pos, k_pos = contiguous(B, 1, S)
    for splits in (3, 2):
        check(q, k, v, sinks, 0, q_pos, k_pos, num_splits=splits)
        assert int(counters(DEVICE, B * K)[:B * K].abs().sum()) == 0
    assert launches == [(1, B * K, 3), (1, B * K, 2)]


@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_ring_buffer_at_high_positions(num_splits):
    """A windowed layer's ring cache (slot = pos % W) near position 131072: slots are out of position order."""
    W, B, H, K, D = 16, 2, 8, 2, 64
    q, k, v, sinks = make_qkv(B, 1, W, H, K, D, torch.float32, seed=11)
    q_pos = torch.tensor([[131071], [131072 + 5]])
    slots = torch.arange(W)
    k_pos = torch.stack([p - ((p - slots) % W) for p in q_pos[:, 0]])  # the latest position held by each slot
    assert (k_pos % W == slots).all() and (q_pos - k_pos < W).all() and (k_pos <= q_pos).all()
    check(q, k, v, sinks, W, q_pos, k_pos, num_splits=num_splits)
    check(q, k, v, sinks, W - 3, q_pos, k_pos, num_splits=num_splits)  # a window narrower than the ring


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("T", [1, 4])
def test_ragged_batch(T, dtype):
    """Rows of different lengths: empty slots have k_pos < 0; each row's queries at its own positions."""
    B, S, H, K, D = 3, 24, 4, 2, 32
    q, k, v, sinks = make_qkv(B, T, S, H, K, D, dtype, seed=T)
    k_pos = torch.arange(S).repeat(B, 1)
    k_pos[1, 10:] = -1  # row 1 holds 10 tokens, padded at the end
    k_pos[2, :] = -1
    k_pos[2, 5:9] = torch.arange(4) + 100  # row 2: 4 tokens at positions 100..103, in the middle of its slots
    q_pos = torch.stack([torch.arange(S - T, S), torch.arange(10 - T, 10), torch.arange(104 - T, 104)])
    for splits in (None, 1, 2):
        check(q, k, v, sinks, 0, q_pos, k_pos, num_splits=splits if T == 1 else 1)
        check(q, k, v, sinks, 3, q_pos, k_pos, num_splits=splits if T == 1 else 1)


@pytest.mark.parametrize("sink", [60.0, -60.0, 1e4, -1e4])
@pytest.mark.parametrize("num_splits", [1, 2])
def test_extreme_sinks(sink, num_splits):
    """A sink far above every score takes all the weight (output ~ 0); far below, it takes none."""
    q, k, v, sinks = make_qkv(1, 1, 70, 4, 2, 16, torch.float32, seed=3)
    sinks = torch.full_like(sinks, sink)
    out, gold = check(q, k, v, sinks, 0, *contiguous(1, 1, 70), num_splits=num_splits)
    if sink > 0:
        assert out.abs().max() < 1e-12
    else:
        plain = attention_ref(q, k, v, torch.full_like(sinks, -torch.inf), 16 ** -0.5, 0, *contiguous(1, 1, 70))
        torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_no_visible_key_gives_zeros(num_splits):
    q, k, v, sinks = make_qkv(2, 1, 70, 4, 2, 16, torch.float32, seed=4)
    q_pos = torch.tensor([[5], [0]])
    k_pos = torch.arange(70).repeat(2, 1) + 10  # every key is in the future of both queries
    k_pos[1] = -1  # row 1: an empty cache
    out, _ = check(q, k, v, sinks, 0, q_pos, k_pos, num_splits=num_splits)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("num_splits", [1, 3])
def test_empty_slots_and_skipped_blocks_are_not_read(num_splits):
    """NaN in empty slots (k_pos < 0) and in whole key blocks outside the window must not reach the output:
    empty slots are read as zeros and blocks with no visible key are skipped without loading K/V."""
    S, W = 200, 64
    q, k, v, sinks = make_qkv(2, 1, S, 4, 2, 16, torch.float32, seed=6)
    q_pos, k_pos = contiguous(2, 1, S)  # the query at 199 sees 136..199: key blocks [0, 64) and [64, 128) are out
    k_pos[1, 150:] = -1  # row 1: 150 tokens, the rest empty slots
    q_pos[1] = 191  # sees 128..149: the same two blocks are out
    clean_k, clean_v = k.clone(), v.clone()
    for t in (k, v):
        t[:, :128] = torch.nan
        t[1, 150:] = torch.nan
    for t in (clean_k, clean_v):
        t[:, :128] = 0
        t[1, 150:] = 0
    args = (sinks, 0.25, W, q_pos.to(DEVICE), k_pos.to(DEVICE))
    out = _attention(q, k, v, *args, num_splits=num_splits)
    torch.testing.assert_close(out, attention_ref(q, clean_k, clean_v, *args), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_prefill_skips_blocks_by_their_bounds(dtype):
    """Several queries a row (the kernel tests blocks by block_bounds' min/max): NaN keys and values in whole blocks
    of 64 slots wholly before every query's window or wholly after every query, and in empty slots, never reach the
    output, in a plain cache and in a ring whose slots are out of position order. (A block whose positions straddle
    the band is read: its keys are real keys, finite in any cache the engine fills.)"""
    S, W, BN = 320, 64, 64  # 3 queries of G = 2 heads: 16-row tiles, 64 keys a step (attention.tiles)
    q, k, v, sinks = make_qkv(2, 3, S, 4, 2, 16, dtype, seed=9)
    k_pos = torch.arange(S).repeat(2, 1)
    k_pos[1] = torch.roll(k_pos[1], 77)  # row 1: a ring, slots out of position order
    k_pos[1, 10:20] = -1  # and some empty slots
    q_pos = torch.tensor([[197, 198, 199], [297, 298, 299]])
    lo, hi = q_pos.min(1, keepdim=True).values - W + 1, q_pos.max(1, keepdim=True).values
    empty = (k_pos < 0).view(2, S // BN, BN)
    before, after = ((k_pos < lo).view(2, S // BN, BN) | empty), ((k_pos > hi).view(2, S // BN, BN) | empty)
    whole = (before.all(-1, keepdim=True) | after.all(-1, keepdim=True)).expand(2, S // BN, BN).reshape(2, S)
    nan = whole | (k_pos < 0)
    assert whole[1, 64:128].sum() == 0 and (k_pos[1, 64:128] > hi[1]).any()  # the ring's straddling block: read
    assert whole.sum() >= 2 * BN and (whole[1] != whole[0]).any()  # blocks skipped in both rows, not the same ones
    clean_k, clean_v = k.clone(), v.clone()
    for t, c in ((k, clean_k), (v, clean_v)):
        t[nan.to(DEVICE)] = torch.nan
        c[nan.to(DEVICE)] = 0
    args = (sinks, 0.25, W, q_pos.to(DEVICE), k_pos.to(DEVICE))
    out = attention(q, k, v, *args)
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), attention_ref(q, clean_k, clean_v, *args).float(),
                               rtol=4 * ATOL[dtype], atol=4 * ATOL[dtype])


def test_block_bounds():
    """Per block of BN slots: min position (-1: an empty slot or past S), min over the keys, max; then the sentinel."""
    from optimized.kernels.attention import block_bounds
    k_pos = torch.tensor([[0, 1, 2, 3, 4], [7, -1, 5, -1, -1]])
    want = [[[0, 0, 1], [2, 2, 3], [-1, 4, 4], [-1, 2**31 - 1, -1]],
            [[-1, 7, 7], [-1, 5, 5], [-1, 2**31 - 1, -1], [-1, 2**31 - 1, -1]]]
    got = block_bounds(k_pos, 2)
    assert got.dtype == torch.int32 and got.tolist() == want


@pytest.mark.parametrize("T,num_splits", [(1, 1), (1, 2), (5, 1)])
def test_strided_views_are_read_in_place(T, num_splits):
    """The engine passes q as a view of its fused qkv output and k/v/positions as slices of its cache."""
    B, S, H, K, D, used = 3, 90, 4, 2, 16, 70
    g = torch.Generator().manual_seed(T)
    qkv = torch.randn(B, T, (H + 2 * K) * D, generator=g).to(DEVICE)
    q = qkv[..., : H * D].reshape(B, T, H, D)  # strides (T*(H+2K)*D, (H+2K)*D, D, 1)
    cache_k, cache_v = (torch.randn(B, S, K, D, generator=g).to(DEVICE) for _ in range(2))
    cache_pos = torch.arange(S).repeat(B, 1).to(DEVICE)
    k, v, k_pos = cache_k[:, :used], cache_v[:, :used], cache_pos[:, :used]
    assert not (q.is_contiguous() or k.is_contiguous() or k_pos.is_contiguous())
    q_pos = torch.arange(used - T, used).repeat(B, 1).to(DEVICE)
    sinks = torch.randn(H, generator=g).to(DEVICE)
    args = (sinks, 0.25, 0, q_pos, k_pos)
    out = _attention(q, k, v, *args, num_splits=num_splits)
    assert out.is_contiguous()
    want = attention_ref(q.contiguous(), k.contiguous(), v.contiguous(), sinks, 0.25, 0, q_pos, k_pos.contiguous())
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_tiles():
    """Decode and few tokens: 64 keys a step on 8 warps; fp16/bf16 prefill: 128 rows (two warpgroups of 64 rows,
    each its own scores) x 128 keys (64 on windowed layers) once the rows fill it; fp32 keeps 64 x 64 (IEEE dot)."""
    from optimized.kernels.attention import tiles
    assert tiles(1, 8, torch.bfloat16) == (16, 64, 8)
    assert tiles(8, 8, torch.bfloat16) == (64, 64, 8)
    assert tiles(9, 8, torch.bfloat16) == tiles(2048, 8, torch.float16) == (128, 128, 8)
    assert tiles(2048, 8, torch.float32) == (64, 64, 8)
    assert tiles(300, 2, torch.float16) == (128, 128, 8) and tiles(5, 2, torch.float16) == (16, 64, 8)


def test_matches_engine_torch_op():
    ops = pytest.importorskip("optimized.ops")
    q, k, v, sinks = make_qkv(2, 6, 20, 4, 2, 16, torch.float32, seed=8)
    q_pos, k_pos = contiguous(2, 6, 20)
    args = (q, k, v, sinks, 0.25, 8, q_pos.to(DEVICE), k_pos.to(DEVICE))
    torch.testing.assert_close(attention(*args), ops.get_backend("torch").attention(*args), rtol=1e-5, atol=1e-5)


def test_bad_input():
    q, k, v, sinks = make_qkv(1, 2, 4, 4, 2, 16, torch.float32, seed=0)
    q_pos, k_pos = contiguous(1, 2, 4)
    q_pos, k_pos = q_pos.to(DEVICE), k_pos.to(DEVICE)
    with pytest.raises(ValueError, match="multiple"):
        attention(q[:, :, :3], k, v, sinks[:3], 1.0, 0, q_pos, k_pos)
    with pytest.raises(ValueError, match="sinks"):
        attention(q, k, v, sinks[:2], 1.0, 0, q_pos, k_pos)
    with pytest.raises(ValueError, match="k_pos"):
        attention(q, k, v, sinks, 1.0, 0, q_pos, k_pos[:, :3])
    with pytest.raises(ValueError, match="window"):
        attention(q, k, v, sinks, 1.0, -1, q_pos, k_pos)
    for bad in (0.0, -0.25, float("nan"), float("inf")):  # the scale rides in the exp2's FMA: max of unscaled scores
        with pytest.raises(ValueError, match="sm_scale must be positive"):
            attention(q, k, v, sinks, bad, 0, q_pos, k_pos)
    with pytest.raises(ValueError, match="integers"):
        attention(q, k, v, sinks, 1.0, 0, q_pos.float(), k_pos)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="2\\*\\*31"):
            attention(q, k, v, sinks, 1.0, 0, q_pos + 2**31, k_pos)
        with pytest.raises(ValueError, match="2\\*\\*31 - 1"):  # the empty-slot mark: never a query's position
            attention(q, k, v, sinks, 1.0, 0, q_pos * 0 + 2**31 - 1, k_pos)
    with pytest.raises(ValueError, match="split-KV"):
        _attention(*make_qkv(1, 40, 40, 4, 2, 16, torch.float32, 0), 1.0, 0, *contiguous(1, 40, 40), num_splits=2)


# ----------------------------------------------------------------------------------------------- GPU only
@needs_cuda
@pytest.mark.parametrize("S", [1024, 8192])
@pytest.mark.parametrize("window", [0, 128])
def test_real_shapes_decode_bf16(S, window):
    q, k, v, sinks = make_qkv(4, 1, S, 64, 8, 64, torch.bfloat16, seed=S)
    check(q, k, v, sinks, window, *contiguous(4, 1, S, offset=131072 - S))


@needs_cuda
@pytest.mark.parametrize("T", [1000, 2048])
@pytest.mark.parametrize("window", [0, 128])
def test_real_shapes_prefill_bf16(T, window):
    q, k, v, sinks = make_qkv(1, T, T, 64, 8, 64, torch.bfloat16, seed=T)
    check(q, k, v, sinks, window, *contiguous(1, T, T))
