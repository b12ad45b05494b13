"""The (token, slot) pairs of a MoE call grouped by expert on the device (no host sync, static shapes: CUDA-graph
capturable), and at small batches the router in front of the grouping, in one launch.

Mirrors the expert loop of reference/moe.py `moe_block` (which pairs each expert receives); kernels/moe.py calls it.
A stable order of the N*A pairs by expert is cut into tiles of BLOCK_M rows of one expert, on a static grid of
cdiv(P, BLOCK_M) + min(E, P) tiles (spare tiles have start == stop); the expert kernels read their tile by tile_of.
  group_by_expert         torch: a stable sort plus searchsorted, any P; the *_ref of the two below
  group_by_expert_kernel  `_group_kernel`, one program for P <= GROUP_KERNEL_MAX_PAIRS (decode): one launch instead
                          of a dozen small torch ops; with x, also x laid out for the GEMV kernels (gemv_x_ref),
                          normalized on the way when given the block's norm scale
  route_and_group         `_moe_router_kernel` (small batches): the router logits (RMSNorm, bias: linear.py's rows),
                          then its last program to finish routes every token (route.py's top-k), groups the pairs
                          in tiles of 1 row and lays rms_norm(x) out: the MoE block before its expert kernels
Not here: choosing between them (kernels/moe.py `plan`).

Legend: N tokens, A experts per token, P = N*A (token, slot) pairs, E experts, C hidden, T tiles.
"""
import torch
import triton
import triton.language as tl

from optimized.kernels.grid_sync import _last_to_arrive, counters
from optimized.kernels import tuning
from optimized.kernels.linear import block_o, project_rows
from optimized.kernels.mxfp4 import X_PRESCALE
from optimized.kernels.pdl import _pdl_enter, _prefetch_rows, launch_args
from optimized.kernels.rounding import inv_rms
from optimized.kernels.route import _top_k_softmax
from reference.norm import EPS

GROUP_KERNEL_MAX_PAIRS = 256  # up to this many (token, slot) pairs, _group_kernel replaces group_by_expert
GROUP_KERNEL_MAX_EXPERTS = 256  # and up to this many experts (its (E, P) and (P, P) tables live in registers)
ROUTER_KERNEL_MAX_TOKENS = 16  # tokens up to which route_and_group runs (its last program routes them all)
C_BLOCK_X = tl.constexpr(1024)  # features a step when the grouping lays x out


def group_by_kernel_fits(P: int, E: int) -> bool:
    """Whether P pairs over E experts fit the one-program grouping (which also checks the ids itself)."""
    return P <= GROUP_KERNEL_MAX_PAIRS and E <= GROUP_KERNEL_MAX_EXPERTS


def group_by_expert(ids: torch.Tensor, E: int, BLOCK_M: int):
    """ids int (N, A) -> pair order sorted by expert (P,), and per tile of a static grid of
    cdiv(P, BLOCK_M) + min(E, P) tiles: expert, first and one-past-last row in that order (spare tiles
    have start == stop). Only device ops with static shapes: no host sync."""
    flat = ids.reshape(-1).long()
    P = flat.numel()
    order = torch.sort(flat, stable=True).indices  # (P,) pair indices grouped by expert
    bounds = torch.searchsorted(flat[order], torch.arange(E + 1, device=ids.device))  # (E+1,)
    counts = bounds[1:] - bounds[:-1]
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    tile_end = torch.cumsum(tiles, 0)
    n_tiles = triton.cdiv(P, BLOCK_M) + min(E, P)  # >= sum of ceil(count_e / BLOCK_M) over experts used
    t = torch.arange(n_tiles, device=ids.device)
    te = torch.searchsorted(tile_end, t, right=True)  # expert of tile t, E for spare tiles
    used = te < E
    te = te.clamp(max=E - 1)
    start = bounds[te] + (t - (tile_end[te] - tiles[te])) * BLOCK_M
    stop = torch.minimum(start + BLOCK_M, bounds[te + 1])
    stop = torch.where(used, stop, start)
    i32 = torch.int32
    return order.to(i32), te.to(i32), start.to(i32), stop.to(i32)


def group_by_expert_kernel(ids: torch.Tensor, E: int, BLOCK_M: int, x=None, xs=None, norm_scale=None, eps=EPS):
    """group_by_expert's outputs from one _group_kernel launch (small P only); with x, also gemv_x_ref(x) into xs
    (of rms_norm(x, norm_scale) when given)."""
    P = ids.numel()
    n_tiles = triton.cdiv(P, BLOCK_M) + min(E, P)
    i32 = dict(dtype=torch.int32, device=ids.device)
    order, te, start, stop = (torch.empty(n, **i32) for n in (P, n_tiles, n_tiles, n_tiles))
    flat = ids.reshape(-1).contiguous()
    scale = norm_scale if norm_scale is not None else flat  # a placeholder pointer when NORM is off
    x_args = (x, xs, scale, x.shape[0], x.shape[1]) if x is not None else (flat, flat, scale, 0, 0)
    _group_kernel[(1,)](flat, order, te, start, stop, P, E, n_tiles, *x_args, float(eps), BLOCK_M=BLOCK_M,
                        X_OUT=x is not None, NORM=norm_scale is not None and x is not None, BLOCK_C=1024,
                        BLOCK_P=triton.next_power_of_2(P), BLOCK_E=triton.next_power_of_2(E),
                        BLOCK_T=triton.next_power_of_2(n_tiles), num_warps=8)
    return order, te, start, stop


def route_and_group(x, gate_w, gate_b, norm_scale, ids, weights):
    """x (N, C), the router gate_w (E, C), gate_b (E,), norm_scale (C,) fp32; ids int32 and weights fp32 (N, k)
    written -> router logits (N, E) in x's dtype, group_by_expert's outputs at tiles of 1 row, and rms_norm(x) laid
    out for the GEMV kernels (gemv_x_ref) in xs (N, 8, C//8): one _moe_router_kernel launch. The arguments are
    checked by the caller (kernels/moe.py `routed_moe`) and contiguous."""
    N, C = x.shape
    E, k = gate_w.shape[0], ids.shape[1]
    P = N * k
    n_tiles = P + min(E, P)  # group_by_expert's static grid at tiles of 1 row
    i32 = dict(dtype=torch.int32, device=x.device)
    order, te, start, stop = (torch.empty(n, **i32) for n in (P, n_tiles, n_tiles, n_tiles))
    logits = torch.empty((N, E), dtype=x.dtype, device=x.device)
    xs = torch.empty((N, 8, C // 8), dtype=torch.float32, device=x.device)
    bo = block_o(E)
    _moe_router_kernel[(triton.cdiv(E, bo), N)](
        x, gate_w, gate_b, norm_scale, logits, counters(x.device, 1), ids, weights, order, te, start, stop, xs,
        N, n_tiles, float(EPS), C=C, E=E, A=k, BLOCK_O=bo, BLOCK_C=tuning.LINEAR_CONFIG["BLOCK_C"],
        BLOCK_E=triton.next_power_of_2(E), BLOCK_A=triton.next_power_of_2(k), BLOCK_P=triton.next_power_of_2(P),
        BLOCK_T=triton.next_power_of_2(n_tiles), num_warps=4, **launch_args(x.device))
    return logits, (order, te, start, stop), xs


@triton.jit
def tile_of(tile_expert_ptr, tile_start_ptr, tile_stop_ptr):
    """This program's tile (program_id 0): its first and one-past-last row in the sorted pair order, and its expert.
    start == stop: a spare tile of the static grid (the caller returns)."""
    tile = tl.program_id(0)
    e = tl.load(tile_expert_ptr + tile).to(tl.int64)
    return tl.load(tile_start_ptr + tile), tl.load(tile_stop_ptr + tile), e


@triton.jit
def _x_out(x_ptr, xs_ptr, scale_ptr, N_X, C, eps, NORM: tl.constexpr, BLOCK_C: tl.constexpr):
    """x's N_X rows of C as the GEMV kernels read them (gemv_x_ref); NORM: of rms_norm(x), as rms_norm.py computes
    it (fp32, t rounded to x's dtype)."""
    DT = x_ptr.dtype.element_ty
    for n in range(N_X):
        if NORM:
            r = inv_rms(x_ptr + n * C, C, eps, BLOCK_C)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            v = tl.load(x_ptr + n * C + c, mask=c < C, other=0.0).to(tl.float32)
            if NORM:
                v = (v * r * tl.load(scale_ptr + c, mask=c < C, other=0.0)).to(DT).to(tl.float32)
            tl.store(xs_ptr + n * C + (c % 8) * (C // 8) + c // 8, v * X_PRESCALE, mask=c < C)


@triton.jit
def _group_tiles(ids, p, p_ok, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, n_tiles,
                 BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr):
    """The pairs p (ids: their experts) in a stable order by expert, and that order cut into tiles of BLOCK_M rows
    of one expert (group_by_expert's outputs)."""
    e = tl.arange(0, BLOCK_E)
    hit = (ids[None, :] == e[:, None]) & p_ok[None, :]  # (E, P): pair p routes to expert e
    counts = tl.sum(hit.to(tl.int32), axis=1)  # (E,)
    ends = tl.cumsum(counts, axis=0)
    starts = ends - counts
    earlier = (ids[:, None] == ids[None, :]) & (p[None, :] < p[:, None]) & p_ok[None, :]  # (P, P)
    rank = tl.sum(earlier.to(tl.int32), axis=1)  # pairs of the same expert before p: the sort is stable
    first = tl.sum(tl.where(hit, starts[:, None], 0), axis=0)  # (P,): starts[ids[p]]
    tl.store(order_ptr + first + rank, p, mask=p_ok)
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    tile_end = tl.cumsum(tiles, axis=0)
    tile_first = tile_end - tiles
    t = tl.arange(0, BLOCK_T)
    own = (tile_first[None, :] <= t[:, None]) & (t[:, None] < tile_end[None, :])  # (T, E): one True per used tile
    used = tl.sum(own.to(tl.int32), axis=1) > 0
    te = tl.sum(tl.where(own, e[None, :], 0), axis=1)
    start = tl.sum(tl.where(own, starts[None, :] - tile_first[None, :] * BLOCK_M, 0), axis=1) + t * BLOCK_M
    stop = tl.minimum(start + BLOCK_M, tl.sum(tl.where(own, ends[None, :], 0), axis=1))
    start = tl.where(used, start, 0)
    stop = tl.where(used, stop, 0)  # spare tiles: start == stop
    t_ok = t < n_tiles
    tl.store(tile_expert_ptr + t, te, mask=t_ok)
    tl.store(tile_start_ptr + t, start, mask=t_ok)
    tl.store(tile_stop_ptr + t, stop, mask=t_ok)


@triton.jit(debug=True)  # debug: keeps the device_assert below (a bad id must fail loudly, not drop silently)
def _group_kernel(ids_ptr, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, P, E, n_tiles,
                  x_ptr, xs_ptr, scale_ptr, N_X, C, eps,
                  BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr,
                  X_OUT: tl.constexpr, NORM: tl.constexpr, BLOCK_C: tl.constexpr):
    """group_by_expert in one program, for the decode regime (P <= 256 pairs): one launch instead of a dozen
    small torch ops. Same outputs as group_by_expert: a stable order by expert, and the tiles of BLOCK_M rows.
    X_OUT (small batches, gemv_pays): also x's N_X rows of C as the GEMV kernels read them (gemv_x_ref), saving
    them a launch. NORM: x is the block's input before its RMSNorm, applied here as rms_norm.py does (fp32, t
    rounded to x's dtype), saving the norm its launch too."""
    if X_OUT:
        _x_out(x_ptr, xs_ptr, scale_ptr, N_X, C, eps, NORM, BLOCK_C)
    p = tl.arange(0, BLOCK_P)
    p_ok = p < P
    ids = tl.load(ids_ptr + p, mask=p_ok, other=0).to(tl.int32)
    tl.device_assert((ids >= 0) & (ids < E), "moe: expert ids out of range")
    _group_tiles(ids, p, p_ok, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, n_tiles, BLOCK_M, BLOCK_E,
                 BLOCK_T)


@triton.jit
def _moe_router_kernel(x_ptr, gw_ptr, gb_ptr, scale_ptr, logits_ptr, cnt_ptr, ids_ptr, wts_ptr,
                       order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, xs_ptr, N, n_tiles, eps,
                       C: tl.constexpr, E: tl.constexpr, A: tl.constexpr, BLOCK_O: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_T: tl.constexpr, PDL: tl.constexpr):
    """At small batches, all of the MoE block before the expert kernels in one launch. Program (block of BLOCK_O
    experts, token n): those router logits, t @ gate.T + bias with t = rms_norm(x) (kernels/linear.py's rows),
    rounded to x's dtype as the torch linear rounds them. The last program to finish (grid_sync) then routes every
    token (route.py's top-k + softmax over the k chosen), groups the pairs by expert, one pair a tile (what
    _group_kernel does) and lays rms_norm(x) out for the GEMV kernels (_x_out)."""
    n = tl.program_id(1).to(tl.int64)
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < E
    _prefetch_rows(PDL, gw_ptr, offs_o, mask_o, C)  # PDL == 2: the gate's rows into L2 before the wait (pdl.py)
    _pdl_enter(PDL)  # PDL: pdl.py
    y = project_rows(x_ptr, gw_ptr, gb_ptr, scale_ptr, n, offs_o, mask_o, eps, C, E, True, True, BLOCK_O, BLOCK_C)
    tl.store(logits_ptr + n * E + offs_o, y.to(logits_ptr.dtype.element_ty), mask=mask_o)
    if _last_to_arrive(cnt_ptr, tl.num_programs(0) * tl.num_programs(1)):
        offs_e = tl.arange(0, BLOCK_E)
        offs_a = tl.arange(0, BLOCK_A)
        for m in range(N):  # every token's logits, written by the other programs: .cg loads (never a stale L1 line)
            z = tl.load(logits_ptr + m * E + offs_e, mask=offs_e < E, other=float("-inf"), cache_modifier=".cg")
            ids, w = _top_k_softmax(z.to(tl.float32), E, A, BLOCK_E, BLOCK_A)
            tl.store(ids_ptr + m * A + offs_a, ids, mask=offs_a < A)
            tl.store(wts_ptr + m * A + offs_a, w, mask=offs_a < A)
        tl.debug_barrier()  # the ids this program's threads stored, read back below by others of its threads
        p = tl.arange(0, BLOCK_P)
        p_ok = p < N * A
        pair_ids = tl.load(ids_ptr + p, mask=p_ok, other=0)
        _group_tiles(pair_ids, p, p_ok, order_ptr, tile_expert_ptr, tile_start_ptr, tile_stop_ptr, n_tiles, 1,
                     BLOCK_E, BLOCK_T)
        _x_out(x_ptr, xs_ptr, scale_ptr, N, C, eps, True, C_BLOCK_X)
