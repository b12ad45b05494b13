"""gpt-oss attention (sinks, sliding window, GQA) as a flash-attention style Triton kernel, with split-KV decode.

Mirrors reference/attention.py `sdpa`; the seam is optimized/ops.py `attention`. Visibility is decided by
positions only, never by slot order, so the engine's ring buffers (slot = pos % window) and ragged batches
(negative k_pos = empty slot) need no special case: key slot s is visible to query t iff
k_pos[s] >= 0 and k_pos[s] <= q_pos[t] and (window == 0 or q_pos[t] - k_pos[s] < window).
One program holds the G query heads of one kv head for BLOCK_T tokens (rows r = token * G + head), so K/V are
read once per kv head and never repeated in memory. Key blocks that every query of the program sees whole come
first, in a loop with no mask per score (the mask was most of a step's instructions: bench/sass_roofline.py), for
as long as the next block is one; the rest go through the masked loop, where blocks wholly outside the queries'
band (all keys after the newest query, or with a window all before the oldest query's window) are skipped whole
(their K/V are not loaded). Both tests read only the block's positions, so they work for any slot order: in a
causal prefill with contiguous positions the past runs unmasked, the diagonal masked, everything above it and,
with a window, outside the band is skipped.
Decode (all queries of a row in one block) splits the keys over programs (flash-decoding) when the batch x kv
heads alone would not fill the GPU; the last split program of each (row, kv head) to finish merges the partial
softmax states with the sink (`_combine`, grid_sync.py: no second launch).
Empty slots may hold garbage (NaN from an uninitialised cache): their K/V are read as zeros. Positions are
compared in int32 (fewer registers): they must be < 2**31 - 1, the masked loop's mark of an empty slot (checked
on CPU; assumed on CUDA, no host sync).
Not here: RoPE and the cache write (the engine does them before the call).

Quirks, each where it happens below:
  - the sink is one extra logit per query head in the softmax denominator, dropped after it: the online
    softmax starts from it (m_i = sink, l_i = 1, acc = 0); it is not scaled by sm_scale.
  - a query with no visible key puts all weight on the sink and returns zeros.
  - query head h uses kv head h // G.

Legend: B batch rows, T query tokens, S key slots, H query heads, K kv heads, G = H // K, D head_dim.
"""
import torch
import triton
import triton.language as tl

from optimized.kernels import tuning
from optimized.kernels.grid_sync import _last_to_arrive, counters
from optimized.kernels.pdl import _pdl_enter, launch_args
from optimized.kernels.rounding import dot  # tl.dot, in IEEE fp32 for fp32 inputs (the default would be tf32)

LOG2E = 1.4426950408889634


def attention_ref(q, k, v, sinks, sm_scale: float, window: int, q_pos, k_pos):
    """Plain torch, in q's dtype (the softmax in fp32, or fp64 for fp64 inputs). Same signature as attention.
    Its own steps, not optimized/attention.py's op: that one computes in fp32 whatever the inputs, and the tests'
    truth is this in float64."""
    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    assert k.shape == v.shape == (B, S, K, D) and sinks.shape == (H,)
    assert q_pos.shape == (B, T) and k_pos.shape == (B, S)
    qg = q.reshape(B, T, K, G, D)
    f = torch.promote_types(q.dtype, torch.float32)
    scores = torch.einsum("btkgd,bskd->bkgts", qg, k).to(f) * sm_scale  # (B, K, G, T, S)
    qp, kp = q_pos[:, :, None], k_pos[:, None, :]  # (B, T, 1), (B, 1, S)
    visible = (kp >= 0) & (kp <= qp)
    if window:
        visible &= qp - kp < window
    scores = scores.masked_fill(~visible[:, None, None], float("-inf"))
    sink = sinks.to(f).reshape(1, K, G, 1, 1).expand(B, K, G, T, 1)
    p = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :S]  # the sink's column is dropped
    out = torch.einsum("bkgts,bskd->btkgd", p.to(q.dtype), v)
    return out.reshape(B, T, H, D)


@triton.jit
def _block_full(kp_row, bnd_row, n0, hi, qp_lo, qp_hi, window, BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr,
                BOUNDS: tl.constexpr):
    """Whether every key of the block at n0 (slots n0..n0+BLOCK_N, all below hi) is visible to every query of
    positions qp_lo..qp_hi: none empty (position >= 0), none after qp_lo, none out of qp_hi's window.
    BOUNDS: from the block's position bounds (block_bounds: 2 scalar loads), else from its positions."""
    if BOUNDS:
        bl = bnd_row + (n0 // BLOCK_N) * 3  # (min, min of the keys, max); n0 <= S: the sentinel block at worst
        kp_lo = tl.load(bl)
        full = (n0 + BLOCK_N <= hi) & (kp_lo >= 0) & (tl.load(bl + 2) <= qp_lo)
    else:
        offs_n = n0 + tl.arange(0, BLOCK_N)
        kp = tl.load(kp_row + offs_n, mask=offs_n < hi, other=-1).to(tl.int32)
        kp_lo = tl.min(kp, 0)
        full = (kp_lo >= 0) & (tl.max(kp, 0) <= qp_lo)
    if HAS_WINDOW:
        full = full & (qp_hi - kp_lo < window)
    return full


@triton.jit
def _softmax_pv(s, qk_scale, vt, m_i, l_i, acc, IEEE: tl.constexpr):
    """One step of the online softmax: raw scores s = q.k (BLOCK_M, BLOCK_N) (-inf where not visible), their scale
    to log2 units qk_scale > 0, values vt (BLOCK_N, BLOCK_D) -> the running max (log2 units), denominator and output
    rows. The scale rides in the exp2's FMA (s * qk_scale - m): no multiply a score (the max of the scaled scores is
    the scaled max: rounding is monotone, qk_scale > 0)."""
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing seen yet: no -inf - -inf
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s * qk_scale - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = dot(p.to(vt.dtype), vt, acc * alpha[:, None], IEEE)
    return m_new, l_i, acc


@triton.jit
def _attn_fwd_kernel(q_ptr, k_ptr, v_ptr, sinks_ptr, qpos_ptr, kpos_ptr, o_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr,
                     bnd_ptr, T, S, qk_scale, window, chunk,
                     sq_b, sq_t, sk_b, sk_s, sv_b, sv_s, sqp_b, skp_b,  # strides: views of the cache need no copy
                     s_bnd_b,
                     H: tl.constexpr, K: tl.constexpr, D: tl.constexpr, G: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     HAS_WINDOW: tl.constexpr, SPLIT: tl.constexpr, IEEE: tl.constexpr, BOUNDS: tl.constexpr,
                     PDL: tl.constexpr):
    _pdl_enter(PDL)  # PDL: pdl.py
    pid_t = tl.program_id(0)
    pid_bk = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = pid_bk // K
    kh = pid_bk % K
    BLOCK_T: tl.constexpr = BLOCK_M // G
    offs_r = tl.arange(0, BLOCK_M)
    t = pid_t * BLOCK_T + offs_r // G
    h = kh * G + offs_r % G  # quirk: query head h uses kv head h // G
    row_ok = (offs_r < BLOCK_T * G) & (t < T)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_in = b.to(tl.int64) * sq_b + t.to(tl.int64) * sq_t + h * D
    q = tl.load(q_ptr + q_in[:, None] + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    q_off = ((b * T + t).to(tl.int64) * H + h) * D  # the output is a new contiguous (B, T, H, D)
    qp = tl.load(qpos_ptr + b.to(tl.int64) * sqp_b + t, mask=row_ok, other=-1).to(tl.int32)  # int32: fewer registers
    k_row = k_ptr + b.to(tl.int64) * sk_b + kh * D
    v_row = v_ptr + b.to(tl.int64) * sv_b + kh * D
    sink = tl.load(sinks_ptr + h, mask=row_ok, other=0.0).to(tl.float32) * 1.4426950408889634  # log2 units
    if SPLIT:  # partial state over one chunk of keys; the sink joins in _combine (the last split program)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
    else:  # quirk: the sink is one extra logit in the denominator: start the online softmax from it
        m_i = sink
        l_i = tl.full([BLOCK_M], 1.0, tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    lo = pid_s * chunk
    hi = tl.minimum(S, lo + chunk)
    # Blocks that every row sees whole (all in its past, inside the window) need no mask per score, which is most
    # of a masked step's instructions (bench/sass_roofline.py): take them first, while the next block is one. The
    # positions decide, not the slot order, so a ring buffer's out-of-order slots just end this loop early.
    qp_lo = tl.min(tl.where(row_ok, qp, 2147483647), 0)
    qp_hi = tl.max(tl.where(row_ok, qp, -1), 0)
    kp_row = kpos_ptr + b.to(tl.int64) * skp_b
    bnd_row = bnd_ptr + b.to(tl.int64) * s_bnd_b
    n0 = lo
    full = _block_full(kp_row, bnd_row, n0, hi, qp_lo, qp_hi, window, BLOCK_N, HAS_WINDOW, BOUNDS)
    while full:
        offs_n = n0 + tl.arange(0, BLOCK_N)
        kt = tl.load(k_row + offs_n.to(tl.int64)[None, :] * sk_s + offs_d[:, None], mask=d_ok[:, None], other=0.0)
        s = dot(q, kt, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), IEEE)
        vt = tl.load(v_row + offs_n.to(tl.int64)[:, None] * sv_s + offs_d[None, :], mask=d_ok[None, :], other=0.0)
        m_i, l_i, acc = _softmax_pv(s, qk_scale, vt, m_i, l_i, acc, IEEE)
        n0 += BLOCK_N
        full = _block_full(kp_row, bnd_row, n0, hi, qp_lo, qp_hi, window, BLOCK_N, HAS_WINDOW, BOUNDS)
    # visible iff 0 <= q_pos - k_pos <= lim, one unsigned compare a score: a negative distance (the future, or an
    # empty slot read as position 2**31 - 1, or a padding row's q_pos -1) wraps past lim
    if HAS_WINDOW:  # the last `window` positions, the query's own included
        lim = (window - 1).to(tl.uint32)
    else:
        lim = tl.full([], 2147483647, tl.uint32)
    for n1 in range(n0, hi, BLOCK_N):  # the rest, masked per score
        offs_n = n1 + tl.arange(0, BLOCK_N)
        col_ok = offs_n < hi
        # a block wholly after every query (a causal prefill's future: half its blocks), or with a window wholly
        # before every query's window, is skipped before any work per score: its K/V are not read
        if BOUNDS:  # the min of its keys' positions and their max: 2 scalar loads (a prefill skips many blocks)
            bl = bnd_row + (n1 // BLOCK_N) * 3
            k_min, k_max = tl.load(bl + 1), tl.load(bl + 2)
        else:
            kp = tl.load(kp_row + offs_n, mask=col_ok, other=-1).to(tl.int32)
            kq = tl.where(kp >= 0, kp, 2147483647)  # empty slots (and past hi): in no query's past
            k_min, k_max = tl.min(kq, 0), tl.max(kp, 0)
        in_band = k_min <= qp_hi
        if HAS_WINDOW:
            in_band = in_band & (k_max > qp_lo - window)
        if in_band:  # the visibility of each score decides (a row that sees none of the block gains nothing)
            if BOUNDS:  # the positions themselves, only for a block in the band
                kp = tl.load(kp_row + offs_n, mask=col_ok, other=-1).to(tl.int32)
                kq = tl.where(kp >= 0, kp, 2147483647)
            vis = (qp[:, None] - kq[None, :]).to(tl.uint32) <= lim
            kv_ok = col_ok & (kp >= 0)  # empty slots may hold garbage (NaN): read them as zeros
            kt = tl.load(k_row + offs_n.to(tl.int64)[None, :] * sk_s + offs_d[:, None],
                         mask=kv_ok[None, :] & d_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
            s = tl.where(vis, dot(q, kt, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), IEEE), float("-inf"))
            vt = tl.load(v_row + offs_n.to(tl.int64)[:, None] * sv_s + offs_d[None, :],
                         mask=kv_ok[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
            m_i, l_i, acc = _softmax_pv(s, qk_scale, vt, m_i, l_i, acc, IEEE)
    if SPLIT:
        n_splits = tl.num_programs(2)
        part = (pid_bk * n_splits + pid_s) * BLOCK_M + offs_r
        tl.store(pm_ptr + part, m_i)
        tl.store(pl_ptr + part, l_i)
        tl.store(pacc_ptr + part[:, None] * BLOCK_D + offs_d[None, :], acc)
        if _last_to_arrive(cnt_ptr + pid_bk, n_splits):  # the last split of (b, kv head) merges them all
            _combine(sinks_ptr, o_ptr, pm_ptr, pl_ptr, pacc_ptr, pid_bk, T, n_splits, H, K, D, G, BLOCK_M, BLOCK_D)
    else:
        out = acc / l_i[:, None]  # no visible key: acc = 0, l_i = 1 (the sink alone): zeros
        tl.store(o_ptr + q_off[:, None] + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _combine(sinks_ptr, o_ptr, pm_ptr, pl_ptr, pacc_ptr, pid_bk, T, n_splits,
             H: tl.constexpr, K: tl.constexpr, D: tl.constexpr, G: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """The split-KV partial states of (row b, kv head kh) = pid_bk merged with the sink, in split order; run by the
    last split program to finish (grid_sync). Partials read with .cg loads: written by other programs."""
    b = pid_bk // K
    kh = pid_bk % K
    offs_r = tl.arange(0, BLOCK_M)
    t = offs_r // G
    h = kh * G + offs_r % G
    row_ok = (offs_r < (BLOCK_M // G) * G) & (t < T)
    offs_d = tl.arange(0, BLOCK_D)
    # quirk: the sink is one extra logit in the denominator (log2 units, not scaled by sm_scale)
    m = tl.load(sinks_ptr + h, mask=row_ok, other=0.0).to(tl.float32) * 1.4426950408889634
    sink = m
    for i in range(0, n_splits):
        m = tl.maximum(m, tl.load(pm_ptr + (pid_bk * n_splits + i) * BLOCK_M + offs_r, cache_modifier=".cg"))
    l_i = tl.exp2(sink - m)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for i in range(0, n_splits):
        part = (pid_bk * n_splits + i) * BLOCK_M + offs_r
        w = tl.exp2(tl.load(pm_ptr + part, cache_modifier=".cg") - m)  # a split that saw no visible key: m = -inf
        l_i += w * tl.load(pl_ptr + part, cache_modifier=".cg")
        acc += w[:, None] * tl.load(pacc_ptr + part[:, None] * BLOCK_D + offs_d[None, :], cache_modifier=".cg")
    out = acc / l_i[:, None]
    o_off = ((b * T + t).to(tl.int64) * H + h) * D
    tl.store(o_ptr + o_off[:, None] + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d < D)[None, :])


BLOCK_N = 64  # keys per step (decode, few tokens, fp32)
PREFILL_ROWS = 64  # (token, head) rows per program at most in fp32 (its IEEE dot): 8 tokens x 8 heads for gpt-oss
MIN_SPLIT_KEYS = 256  # split-KV decode: keys per split at least


def tiles(T: int, G: int, dtype, window: int = 0) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for T query tokens of G heads a kv head: BLOCK_M rows = BLOCK_M // G tokens x
    G heads, as many as T needs up to tuning.PREFILL_TILE's (PREFILL_ROWS in fp32); its keys and warps once the
    rows fill its tile (a prefill of >= 9 tokens on gpt-oss), else 64 keys and 8 warps (decode: not issue-bound,
    bench/sass_roofline.py)."""
    tile = tuning.PREFILL_TILE
    rows = PREFILL_ROWS if dtype == torch.float32 else tile["BLOCK_M"]
    BLOCK_M = max(16, triton.next_power_of_2(G * min(T, max(1, rows // G))))  # tl.dot wants M >= 16
    if dtype != torch.float32 and BLOCK_M == tile["BLOCK_M"]:
        return BLOCK_M, tile["BLOCK_N_WINDOW" if window else "BLOCK_N"], tile["num_warps"]
    return BLOCK_M, BLOCK_N, 8


def block_bounds(k_pos: torch.Tensor, BN: int) -> torch.Tensor:
    """k_pos (B, S) -> int32 (B, cdiv(S, BN) + 1, 3): for each block of BN slots the min of its positions (-1 if a
    slot is empty or past S), the min over its keys (2**31 - 1 if none) and the max; then a sentinel block past the
    end (-1, 2**31 - 1, -1). The kernel's block tests at prefill read these 3 scalars instead of BN positions and
    their reductions (most blocks of a prompt are skipped: a windowed layer's chunk of 1024 tokens looks at ~18
    blocks of 64 keys a query block and attends 3). A few torch ops, no host sync."""
    B, S = k_pos.shape
    nb = triton.cdiv(S, BN)
    kp = torch.nn.functional.pad(k_pos.long(), (0, nb * BN - S), value=-1).view(B, nb, BN)
    keys_min = torch.where(kp >= 0, kp, 2**31 - 1).amin(-1)
    out = torch.stack([kp.amin(-1), keys_min, kp.amax(-1)], dim=-1)
    sentinel = torch.full((B, 1, 3), -1, dtype=out.dtype, device=out.device)  # filled on the device: no copy
    sentinel[:, :, 1] = 2**31 - 1
    return torch.cat([out, sentinel], dim=1).to(torch.int32)


def _check(q, k, v, sinks, window, q_pos, k_pos):
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"attention: q must be (B, T, H, D) and k (B, S, K, D), "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}")
    B, T, H, D = q.shape
    S, K = k.shape[1], k.shape[2]
    if tuple(k.shape) != (B, S, K, D) or tuple(v.shape) != (B, S, K, D):
        raise ValueError(f"attention: k {tuple(k.shape)} and v {tuple(v.shape)} must both be (B={B}, S, K, D={D})")
    if H % K:
        raise ValueError(f"attention: H={H} query heads is not a multiple of K={K} kv heads")
    if tuple(sinks.shape) != (H,):
        raise ValueError(f"attention: sinks must be (H={H},), got {tuple(sinks.shape)}")
    if tuple(q_pos.shape) != (B, T) or tuple(k_pos.shape) != (B, S):
        raise ValueError(f"attention: q_pos {tuple(q_pos.shape)} must be (B, T)=({B}, {T}) and "
                         f"k_pos {tuple(k_pos.shape)} must be (B, S)=({B}, {S})")
    if q_pos.dtype.is_floating_point or k_pos.dtype.is_floating_point:
        raise ValueError(f"attention: positions must be integers, got {q_pos.dtype}, {k_pos.dtype}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"attention: q, k, v must share one of fp32/fp16/bf16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device.type != "cuda":  # on CUDA this check would cost a host sync per call: positions < 2**31 - 1 assumed
        biggest = max([int(t.max()) for t in (q_pos, k_pos) if t.numel()], default=0)
        if biggest >= 2**31 - 1:
            raise ValueError(f"attention: positions must be < 2**31 - 1 (compared in int32; 2**31 - 1 marks an empty "
                             f"slot), got {biggest}")
    if int(window) < 0:
        raise ValueError(f"attention: window must be >= 0 (0 = none), got {window}")
    for name, t in (("k", k), ("v", v), ("sinks", sinks), ("q_pos", q_pos), ("k_pos", k_pos)):
        if t.device != q.device:
            raise ValueError(f"attention: {name} is on {t.device}, q on {q.device}")
    return B, T, H, D, S, K


def _sm_count(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter: a few splits where S allows, so CPU tests exercise the split path


def _attention(q, k, v, sinks, sm_scale, window, q_pos, k_pos, num_splits=None):
    """attention, with the split-KV count forced when num_splits is given (tests use it)."""
    B, T, H, D, S, K = _check(q, k, v, sinks, window, q_pos, k_pos)
    if not 0 < float(sm_scale) < float("inf"):  # _softmax_pv takes the max of unscaled scores
        raise ValueError(f"attention: sm_scale must be positive and finite, got {sm_scale}")
    G = H // K
    # strided views are read in place (the engine passes slices of its cache); only the two innermost axes
    # (kv head, head_dim) of k and v, and head_dim of q, must be dense
    q = q if q.stride(3) == 1 and q.stride(2) == D else q.contiguous()
    k = k if k.stride(3) == 1 and k.stride(2) == D else k.contiguous()
    v = v if v.stride(3) == 1 and v.stride(2) == D else v.contiguous()
    sinks = sinks.float().contiguous()
    q_pos, k_pos = q_pos.long(), k_pos.long()
    q_pos = q_pos if q_pos.stride(1) == 1 else q_pos.contiguous()
    k_pos = k_pos if k_pos.stride(1) == 1 else k_pos.contiguous()
    out = torch.empty((B, T, H, D), dtype=q.dtype, device=q.device)  # contiguous, whatever q's strides
    if B * T == 0:
        return out
    BLOCK_D = max(16, triton.next_power_of_2(D))  # tl.dot wants every dimension >= 16
    BLOCK_M, BN, warps = tiles(T, G, q.dtype, int(window))
    BLOCK_T = BLOCK_M // G
    n_tblocks = triton.cdiv(T, BLOCK_T)
    qk_scale = float(sm_scale) * LOG2E
    ieee = q.dtype == torch.float32
    if num_splits is None:  # split only what one q block covers, and only as far as the GPU needs programs
        num_splits = 1
        if n_tblocks == 1:  # each split gets >= MIN_SPLIT_KEYS keys, or writing and merging partials costs more
            num_splits = max(1, min(triton.cdiv(S, MIN_SPLIT_KEYS), (2 * _sm_count(q.device)) // (B * K)))
    if n_tblocks > 1 and num_splits != 1:
        raise ValueError(f"attention: split-KV needs all T={T} queries in one block of {BLOCK_T} tokens")
    chunk = triton.cdiv(triton.cdiv(max(S, 1), num_splits), BN) * BN
    num_splits = max(1, triton.cdiv(S, chunk))
    split = num_splits > 1
    if split:
        pm = torch.empty((B * K * num_splits * BLOCK_M,), dtype=torch.float32, device=q.device)
        pl = torch.empty_like(pm)
        pacc = torch.empty((B * K * num_splits * BLOCK_M, BLOCK_D), dtype=torch.float32, device=q.device)
        cnt = counters(q.device, B * K)  # the last split of each (row, kv head) combines: no second launch
    else:
        pm = pl = pacc = sinks  # unused
        cnt = q_pos
    bounds = block_bounds(k_pos, BN) if T > 1 else None  # one query token a row: every block is looked at anyway
    grid = (n_tblocks, B * K, num_splits)
    _attn_fwd_kernel[grid](q, k, v, sinks, q_pos, k_pos, out, pm, pl, pacc, cnt,
                           bounds if bounds is not None else cnt, T, S, qk_scale, int(window), chunk,
                           q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                           q_pos.stride(0), k_pos.stride(0), bounds.stride(0) if bounds is not None else 0,
                           H=H, K=K, D=D, G=G, BLOCK_M=BLOCK_M, BLOCK_N=BN, BLOCK_D=BLOCK_D,
                           HAS_WINDOW=int(window) > 0, SPLIT=split, IEEE=ieee, BOUNDS=bounds is not None,
                           num_warps=warps, num_stages=2, **launch_args(q.device))
    return out


def attention(q, k, v, sinks, sm_scale: float, window: int, q_pos, k_pos):
    """q (B, T, H, D), k/v (B, S, K, D), sinks (H,), positions (B, T)/(B, S) -> (B, T, H, D) in q's dtype."""
    return _attention(q, k, v, sinks, sm_scale, window, q_pos, k_pos)
