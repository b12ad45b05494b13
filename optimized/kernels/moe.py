"""gpt-oss MoE experts as Triton kernels that read the packed MXFP4 weights directly (never a bf16 copy): the op
`moe`, the block after its input `routed_moe`, and `plan`, the one place that picks their kernels.

Mirrors reference/moe.py (swiglu, the expert loop of moe_block) and reference/mxfp4.py (decode); the seam is
optimized/ops.py `moe` / `routed_moe`. No host sync anywhere, static shapes: CUDA-graph capturable. A call is
  1. the (token, slot) pairs grouped by expert, in tiles of one expert's rows (moe_group.py);
  2. the experts, one of two kernel families (`plan`, on shapes only):
       moe_gemv.py  small batches (`gemv_pays`: batch 1 always): a tile is one pair, fp32 FMAs on codes decoded
                    from uint32 words; the down kernel sums a token's experts: 3 launches (group, up, down);
       moe_mma.py   otherwise: tensor-core tiles of 16 rows (decode) or 64/128 (prefill), tl.dot_scaled on
                    bf16/fp16 x, decode + tl.dot in IEEE fp32 on fp32 x; up, down, then the sum over slots.
The FP4 decode in registers for both: kernels/mxfp4.py. The weights keep the release layout ((E, rows, C//32, 16)
bytes: each output row's codes contiguous along the reduction axis, as a coalesced load wants): no load-time
re-layout. The block's RMSNorm before and residual add after are here when the caller passes norm_scale and the
residual: in the grouping kernel (which lays x out for the GEMV kernels) and the last kernel, else the RMSNorm
kernel first. `routed_moe` takes the router too: at small batches moe_group.py's router kernel computes the logits,
routes and groups in one launch (the block is 3 launches: router, up, down); larger batches run linear, route and
moe in turn. The tiles and the thresholds between the paths are kernels/tuning.py's; how the kernels and tiles were
chosen (SASS counts, ceilings): optimized/README.md "Triton MoE" and BENCHMARKS.md "GPU".
Its *_ref is `moe_ref`, plain torch expert by expert rather than the engine's torch op (optimized/moe.py `moe`):
a float64 x must stay float64 (the tests' truth), where the engine's op computes SwiGLU (and on CPU everything) in
fp32; it calls the engine's swiglu, decode (kernels/mxfp4.py `mxfp4_dequant_ref`) and RMSNorm.

Legend: N tokens, A experts per token, P = N*A (token, slot) pairs, E experts, C hidden, I intermediate.
"""
from typing import NamedTuple

import torch

from optimized.kernels import tuning
from optimized.kernels.linear import LINEAR_MAX_ROWS
from optimized.kernels.linear import linear as project_linear
from optimized.kernels.moe_gemv import moe_gemv
from optimized.kernels.moe_group import (ROUTER_KERNEL_MAX_TOKENS, group_by_expert, group_by_expert_kernel,
                                         group_by_kernel_fits, route_and_group)
from optimized.kernels.moe_mma import moe_mma
from optimized.kernels.mxfp4 import gemv_x_ref, mxfp4_dequant_ref
from optimized.kernels.rms_norm import rms_norm
from optimized.kernels.route import route as route_op
from optimized.moe import swiglu
from optimized.norm import rms_norm as torch_rms_norm


def moe_ref(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float, residual=None,
            norm_scale=None):
    """Plain torch, one expert at a time, matmuls and SwiGLU in x's dtype, the sum over k in fp32. Same signature
    as moe."""
    if norm_scale is not None:  # norm.py's torch RMSNorm (fp32, rounded to x's dtype)
        x = torch_rms_norm(x, norm_scale, kernel=False)
    N, C = x.shape
    A = ids.shape[1]
    E, I2 = b1.shape
    assert ids.shape == weights.shape == (N, A) and b2.shape == (E, C)
    out = torch.zeros((N, C), dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        rows, slot = torch.nonzero(ids == e, as_tuple=True)
        W1 = mxfp4_dequant_ref(w1_blocks[e], w1_scales[e], x.dtype)  # (2I, C)
        W2 = mxfp4_dequant_ref(w2_blocks[e], w2_scales[e], x.dtype)  # (C, I)
        h = swiglu(x[rows] @ W1.T + b1[e].to(x.dtype), limit, dtype=x.dtype)  # (n, I)
        y = h @ W2.T + b2[e].to(x.dtype)  # (n, C)
        out.index_add_(0, rows, weights[rows, slot].float()[:, None] * y.float())
    return out.to(x.dtype) if residual is None else residual + out.to(x.dtype)


class Plan(NamedTuple):
    """The kernels a call runs, from its shapes only (no sync: the same choice for every replay of a CUDA graph)."""
    gemv: bool  # the GEMV kernels (moe_gemv.py, tiles of 1 pair), else the tensor-core ones (moe_mma.py)
    group_kernel: bool  # the grouping in one program (moe_group.py `_group_kernel`, which checks the ids itself)
    cfg: dict  # the expert kernels' tiles

    @property
    def block_m(self) -> int:
        """Rows of a tile."""
        return 1 if self.gemv else self.cfg["BLOCK_M"]

    @property
    def norm_in_grouping(self) -> bool:
        """Whether the grouping kernel applies the block's RMSNorm as it lays x out for the GEMV kernels."""
        return self.gemv and self.group_kernel


def plan(N: int, A: int, E: int, dtype: torch.dtype) -> Plan:
    """The kernels for N tokens with A of E experts each, x in dtype."""
    gemv = gemv_pays(N, A, E)
    t = tuning
    cfg = (t.GEMV_CONFIG if gemv else t.DECODE_CONFIG if N <= t.DECODE_MAX_TOKENS
           else t.PREFILL_CONFIG_FP32 if dtype == torch.float32 else t.PREFILL_CONFIG)
    return Plan(gemv=gemv, group_kernel=group_by_kernel_fits(N * A, E), cfg=cfg)


def gemv_pays(N: int, A: int, E: int) -> bool:
    """Whether N tokens with A experts each take the GEMV kernels: the N*A pairs against the distinct experts they
    are expected to hit at random, E * (1 - (1 - 1/E)**(N*A)). An expert routed twice is read twice (by two tiles
    running together, from L2 if it holds it), which the GEMV's fewer instructions a byte still pay for up to
    GEMV_PAIRS_PER_EXPERT reads (kernels/tuning.py; optimized/README.md "Triton MoE")."""
    P = N * A
    return N <= tuning.GEMV_MAX_TOKENS and P <= tuning.GEMV_PAIRS_PER_EXPERT * E * (1 - (1 - 1 / E) ** P)


def prefill_tile_rows(dtype: torch.dtype) -> int:
    """Rows a prefill tile holds, all (token, slot) pairs of one expert: each tile decodes its expert's FP4 codes
    once for them all, so an expert that receives fewer rows pays the whole decode (and MMA) of a tile anyway.
    The engine sizes its prefill steps by it (optimized/generate.py `default_prefill_tokens`)."""
    return (tuning.PREFILL_CONFIG_FP32 if dtype == torch.float32 else tuning.PREFILL_CONFIG)["BLOCK_M"]


def _check(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2):
    if x.dim() != 2 or ids.dim() != 2:
        raise ValueError(f"moe: x must be (N, C) and ids (N, k), got {tuple(x.shape)} and {tuple(ids.shape)}")
    N, C = x.shape
    A = ids.shape[1]
    if w1_blocks.dim() != 4:
        raise ValueError(f"moe: w1_blocks must be (E, 2I, C//32, 16), got {tuple(w1_blocks.shape)}")
    E, I2 = w1_blocks.shape[:2]
    I = I2 // 2
    want = {"ids": (ids, (N, A)), "weights": (weights, (N, A)), "w1_blocks": (w1_blocks, (E, 2 * I, C // 32, 16)),
            "w1_scales": (w1_scales, (E, 2 * I, C // 32)), "b1": (b1, (E, 2 * I)),
            "w2_blocks": (w2_blocks, (E, C, I // 32, 16)), "w2_scales": (w2_scales, (E, C, I // 32)),
            "b2": (b2, (E, C))}
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"moe: {name} has shape {tuple(t.shape)}, expected {shape} (N={N}, C={C}, E={E}, I={I})")
        if t.device != x.device:
            raise ValueError(f"moe: {name} is on {t.device}, x on {x.device}")
    if C % 32 or I2 % 64:
        raise ValueError(f"moe: C={C} and I={I} must be multiples of 32 (MXFP4 blocks)")
    for name, t in (("w1_blocks", w1_blocks), ("w1_scales", w1_scales), ("w2_blocks", w2_blocks),
                    ("w2_scales", w2_scales)):
        if t.dtype != torch.uint8:
            raise ValueError(f"moe: {name} must be uint8 (packed MXFP4), got {t.dtype}")
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"moe: ids must be int32 or int64, got {ids.dtype}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"moe: x must be fp32, fp16 or bf16, got {x.dtype}")
    return N, C, A, E, I


def moe(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float,
        residual=None, norm_scale=None) -> torch.Tensor:
    """x (N, C), ids int (N, k), weights fp32 (N, k), packed MXFP4 experts -> (N, C) in x's dtype.
    residual (N, C) in x's dtype: returns residual + moe(x) instead, added in the kernel that ends the op (no
    launch of its own), rounded as torch's residual + moe(x). norm_scale (C,) fp32: the experts see
    rms_norm(x, norm_scale) (the block's norm: in the grouping kernel at small batches, else its own kernel)."""
    N, C, A, E, I = _check(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2)
    if norm_scale is not None and (tuple(norm_scale.shape) != (C,) or norm_scale.dtype != torch.float32
                                   or norm_scale.device != x.device):
        raise ValueError(f"moe: norm_scale must be ({C},) float32 on {x.device}, got {tuple(norm_scale.shape)} "
                         f"{norm_scale.dtype} on {norm_scale.device}")
    if residual is not None and (tuple(residual.shape) != (N, C) or residual.dtype != x.dtype
                                 or residual.device != x.device):
        raise ValueError(f"moe: residual must be (N, C) = {(N, C)} {x.dtype} on {x.device}, got "
                         f"{tuple(residual.shape)} {residual.dtype} on {residual.device}")
    if N == 0:
        return torch.empty_like(x)
    p = plan(N, A, E, x.dtype)
    flat = ids.reshape(-1)
    if x.device.type != "cuda":
        if not bool(((flat >= 0) & (flat < E)).all()):
            raise ValueError(f"moe: expert ids must be in 0..{E - 1}, got min {int(flat.min())} max {int(flat.max())}")
    elif not p.group_kernel:  # device-side check: no host sync, stays graph-capturable
        torch._assert_async(((flat >= 0) & (flat < E)).all())
    x, ids, weights = x.contiguous(), ids.contiguous(), weights.float().contiguous()
    experts = (w1_blocks.contiguous(), w1_scales.contiguous(), b1.contiguous(), w2_blocks.contiguous(),
               w2_scales.contiguous(), b2.contiguous())
    if norm_scale is not None and not p.norm_in_grouping:
        x = rms_norm(x, norm_scale.contiguous())
        norm_scale = None
    xs = torch.empty((N, 8, C // 8), dtype=torch.float32, device=x.device) if p.gemv else None
    if p.group_kernel:
        grouping = group_by_expert_kernel(ids, E, p.block_m, *((x, xs, norm_scale) if p.gemv else ()))
    else:
        grouping = group_by_expert(ids, E, p.block_m)
        if p.gemv:
            xs.copy_(gemv_x_ref(x))
    if p.gemv:
        return moe_gemv(x, ids, weights, grouping, xs, *experts, limit, residual, p.cfg)
    return moe_mma(x, weights, grouping, *experts, limit, residual, p.cfg)


def routed_moe(x, gate_w, gate_b, norm_scale, k: int, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2,
               limit: float, residual=None):
    """The MoE block after its input: x (N, C) -> (out, router_logits (N, E) in x's dtype, ids int32 (N, k),
    weights fp32 (N, k)), out = [residual +] moe(rms_norm(x), route(rms_norm(x) @ gate_w.T + gate_b, k)).
    At small batches (the GEMV regime) 3 launches: moe_group.py's router kernel (router, routing, grouping, x laid
    out), up, down; otherwise the ops in turn (linear, route, moe), with the same results."""
    if x.dim() != 2 or gate_w.dim() != 2 or gate_w.shape[1] != x.shape[1]:
        raise ValueError(f"routed_moe: x must be (N, C) and gate_w (E, C), got {tuple(x.shape)}, "
                         f"{tuple(gate_w.shape)}")
    N, C = x.shape
    E = gate_w.shape[0]
    if E != w1_blocks.shape[0]:
        raise ValueError(f"routed_moe: the router has {E} rows for {w1_blocks.shape[0]} experts")
    p = plan(N, k, E, x.dtype)
    fused = (p.gemv and p.group_kernel and 1 <= k <= E and N <= ROUTER_KERNEL_MAX_TOKENS
             and gate_w.dtype in (x.dtype, torch.bfloat16) and gate_b is not None and norm_scale is not None)
    if not fused:
        # many rows: the linear and the tensor-core experts would each run the same RMSNorm kernel on x: run it once
        # (the same numbers); the GEMV experts' grouping normalizes as it lays x out, and so does the linear kernel
        once = norm_scale is not None and N > LINEAR_MAX_ROWS and not p.norm_in_grouping
        t, t_scale = (rms_norm(x, norm_scale), None) if once else (x, norm_scale)
        logits = project_linear(t, gate_w, gate_b, norm_scale=t_scale)
        ids, weights = route_op(logits, k)
        out = moe(t, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit, residual=residual,
                  norm_scale=t_scale)
        return out, logits, ids, weights
    ids = torch.empty((N, k), dtype=torch.int32, device=x.device)  # written by the router kernel; its shape is
    weights = torch.empty((N, k), dtype=torch.float32, device=x.device)  # checked below with the other arguments
    _check(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2)
    if tuple(gate_b.shape) != (E,) or tuple(norm_scale.shape) != (C,) or norm_scale.dtype != torch.float32:
        raise ValueError(f"routed_moe: gate_b must be ({E},) and norm_scale ({C},) float32, got "
                         f"{tuple(gate_b.shape)}, {tuple(norm_scale.shape)} {norm_scale.dtype}")
    if residual is not None and (tuple(residual.shape) != (N, C) or residual.dtype != x.dtype):
        raise ValueError(f"routed_moe: residual must be {(N, C)} {x.dtype}, got {tuple(residual.shape)} "
                         f"{residual.dtype}")
    x, gate_w, gate_b, norm_scale = x.contiguous(), gate_w.contiguous(), gate_b.contiguous(), norm_scale.contiguous()
    experts = (w1_blocks.contiguous(), w1_scales.contiguous(), b1.contiguous(), w2_blocks.contiguous(),
               w2_scales.contiguous(), b2.contiguous())
    logits, grouping, xs = route_and_group(x, gate_w, gate_b, norm_scale, ids, weights)
    out = moe_gemv(x, ids, weights, grouping, xs, *experts, limit, residual, p.cfg)
    return out, logits, ids, weights
