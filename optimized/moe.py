"""gpt-oss mixture of experts in torch: the router op, the MoE op over packed MXFP4 experts, and the block.

Source: openai/gpt-oss gpt_oss/torch/model.py (MLPBlock, swiglu). Quirks, where they happen below: router
linear WITH bias, softmax over the k chosen logits only, ties to the lower expert id; mlp1 rows interleave
gate (even) and linear (odd); gate clamped above only, linear clamped both ways, gate*sigmoid(1.702 gate)*(linear+1);
expert biases added per expert before the routing weight.
Experts stay packed (uint8 blocks + scales) and are decoded inside the op, never all at once:
  - few routed rows (decode): gather only the routed experts' packed weights and decode just those
    (no host sync, so it can be captured in a CUDA graph); on CPU not even decoded: one C call
    (mxfp4_cpu.moe_decode) multiplies straight from the packed bytes, or without a C compiler mxfp4.matvec
    sums per-byte contributions in torch;
  - many rows (prefill): one expert at a time, over the rows routed to it; on CPU one C call
    (mxfp4_cpu.moe_prefill) does that from the packed bytes, a few decoded weight rows at a time.

Legend: N tokens, C hidden, E experts, A experts per token, I intermediate, R = N*A routed rows.
"""
import ctypes

import torch

from optimized import cbuild, mxfp4, mxfp4_cpu
from optimized.linear import project
from optimized.norm import norm_for, rms_norm
from reference.moe import SWIGLU_ALPHA

GATHER_BYTES = 512 * 2**20  # decoded weights the gather path may hold at once; beyond it, go expert by expert
CPU_MATVEC = True  # on CPU: the C kernels, else the gather path from the packed bytes (tests switch it off to
# reach the torch decode+bmm and expert-by-expert paths, the kernels' *_ref)
CPU_KERNEL_ROWS = 16  # routed rows up to which CPU uses moe_decode (it re-reads an expert for each routed row);
# beyond, moe_prefill (each hit expert read once for all of its rows). Measured on one Sapphire Rapids core, C=I=768,
# E=32, A=4, best of 15 (decode / prefill ms): R=4 0.51/0.58, R=8 1.00/1.21, R=16 1.92/1.89, R=32 3.25/3.07,
# R=64 6.27/4.95; R=512 ~53-65/17-18 (the torch expert loop it replaces: 250-350)


ROUTE_SOURCE = "route.c"
ROUTE_SIGNATURES = {"route_rows": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                    ctypes.c_void_p, ctypes.c_void_p], None)}
ROUTE_KERNEL_ROWS = 64  # rows up to which CPU routes in C (csrc/route.c); beyond, torch's sort


def route(router_logits: torch.Tensor, k: int, kernel: bool = True):
    """(N, E) -> ids int32 (N, k) by descending logit, ties to the lower id; weights fp32 (N, k) summing to 1.
    A few CPU rows go to csrc/route.c (same rule); kernel=False keeps the torch path, its *_ref."""
    N, E = router_logits.shape
    assert 1 <= k <= E, (k, E)
    if (kernel and router_logits.device.type == "cpu" and N <= ROUTE_KERNEL_ROWS and k <= 64
            and router_logits.dtype in (torch.float32, torch.bfloat16) and router_logits.is_contiguous()):
        lib = cbuild.load(ROUTE_SOURCE, ROUTE_SIGNATURES)
        if lib is not None:
            ids, weights = torch.empty(N, k, dtype=torch.int32), torch.empty(N, k, dtype=torch.float32)
            lib.route_rows(router_logits.data_ptr(), int(router_logits.dtype == torch.bfloat16), N, E, k,
                           ids.data_ptr(), weights.data_ptr())
            return ids, weights
    top, ids = torch.sort(router_logits.float(), dim=-1, descending=True, stable=True)  # stable: lower id first
    top, ids = top[:, :k], ids[:, :k]
    return ids.to(torch.int32), torch.softmax(top, dim=-1)  # softmax over the k chosen only


def swiglu(h: torch.Tensor, limit: float, alpha: float = SWIGLU_ALPHA, dtype=torch.float32) -> torch.Tensor:
    """(..., 2I) -> (..., I), computed in dtype (float32; the Triton kernels' moe_ref keeps its activations')."""
    h = h.to(dtype)
    gate, linear = h[..., 0::2], h[..., 1::2]  # quirk: interleaved rows of mlp1
    gate = gate.clamp(max=limit)  # quirk: clamped above only
    linear = linear.clamp(-limit, limit)
    return gate * torch.sigmoid(alpha * gate) * (linear + 1.0)  # quirk: +1 on the linear half


def moe(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float,
        residual=None, norm_scale=None, activations: str | None = None) -> torch.Tensor:
    """The op (seam B): x (N, C) -> sum over the A routed experts of weight * expert(x), (N, C) in x's dtype;
    residual (N, C): residual + that sum instead (a backend with kernels adds it in the op's last kernel);
    norm_scale (C,): the experts see rms_norm(x, norm_scale) (a backend with kernels folds it into one);
    activations "int8": both expert matmuls take their input in Q8_0, as llama.cpp's CPU path does (not the
    released precision: the classes "+int8" of the kit; the CPU C kernels only, see ACTIVATIONS)."""
    t = x if norm_scale is None else rms_norm(x, norm_scale)
    y = _moe(t, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit, activations)
    return y if residual is None else residual + y


ACTIVATIONS = ("int8",)  # what `activations` may name: Q8_0 (golden/activations.py) in the CPU C kernels


def check_activations(activations: str | None, device: torch.device):
    """None (the released precision), or a rounding the CPU kernels run; anything else is one clear error."""
    if activations is None:
        return
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be None or one of {ACTIVATIONS}, got {activations!r}")
    if device.type != "cpu" or not (CPU_MATVEC and mxfp4_cpu.available()):
        why = (f"the device is {device}" if device.type != "cpu" else
               f"{mxfp4_cpu.unavailable_reason or 'optimized.moe.CPU_MATVEC is off'}")
        raise ValueError(f"activations={activations!r} runs in the CPU MXFP4 kernels (csrc/mxfp4_*.c) only: {why}")


def _moe(x, ids, weights, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit: float,
         activations: str | None = None) -> torch.Tensor:
    N, C = x.shape
    E, I2, CB, _ = w1_blocks.shape
    I = I2 // 2
    A = ids.shape[1]
    assert tuple(ids.shape) == tuple(weights.shape) == (N, A) and C == CB * 32
    assert tuple(w1_scales.shape) == (E, I2, CB) and tuple(b1.shape) == (E, I2)
    assert tuple(w2_blocks.shape) == (E, C, I // 32, 16) and tuple(w2_scales.shape) == (E, C, I // 32)
    assert tuple(b2.shape) == (E, C)
    out_dtype = x.dtype
    R = N * A
    check_activations(activations, x.device)
    if x.device.type == "cpu" and CPU_MATVEC and mxfp4_cpu.available():
        # on CPU one C call reads the experts' packed bytes in place (mxfp4_cpu.py), float32: per routed row for a
        # few rows, per hit expert (decoded once, a tile at a time, for all of its rows) beyond
        kernel = mxfp4_cpu.moe_decode if R <= CPU_KERNEL_ROWS else mxfp4_cpu.moe_prefill
        y = kernel(x.float().contiguous(), ids.to(torch.int32).contiguous(), weights.float().contiguous(),
                   w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, limit, SWIGLU_ALPHA,
                   int8=activations == "int8")
        return y.to(out_dtype)
    # CPUs emulate bf16 matmuls slowly: there the experts are decoded and applied in float32 (more exact, faster)
    dt = torch.float32 if x.device.type == "cpu" else x.dtype
    if _gathers(R, I, C, dt) and x.device.type == "cpu" and CPU_MATVEC:
        # no C kernel: gather-and-sum from the packed bytes in torch
        x, b1, b2 = x.to(dt), b1.to(dt), b2.to(dt)
        e = ids.reshape(R).long()
        xr = x.repeat_interleave(A, dim=0)  # (R, C): token n's copy for each of its A experts
        rows = e.tolist()  # host ids are free on CPU; stacking views copies faster than index_select on uint8
        pick = lambda t: torch.stack([t[i] for i in rows])  # noqa: E731
        h = mxfp4.matvec(pick(w1_blocks), pick(w1_scales), xr) + b1.index_select(0, e)  # (R, 2I)
        y = mxfp4.matvec(pick(w2_blocks), pick(w2_scales), swiglu(h, limit)) + b2.index_select(0, e)  # (R, C)
        return torch.einsum("na,nac->nc", weights, y.float().reshape(N, A, C)).to(out_dtype)
    W1_of = lambda i: mxfp4.decode(_take(w1_blocks, i), _take(w1_scales, i), dt)  # noqa: E731
    W2_of = lambda i: mxfp4.decode(_take(w2_blocks, i), _take(w2_scales, i), dt)  # noqa: E731
    return _apply_experts(x, ids, weights, W1_of, b1, W2_of, b2, limit, dt)


def moe_dense(x, ids, weights, w1, b1, w2, b2, limit: float, residual=None, norm_scale=None) -> torch.Tensor:
    """The MoE op over dense experts (a dequantized or bf16 fine-tuned checkpoint; not a release format, so no
    kernel: the torch steps on every backend): w1 (E, 2I, C), w2 (E, C, I) as mlp1/mlp2 in the original layout;
    otherwise `moe`'s arguments and result."""
    t = x if norm_scale is None else rms_norm(x, norm_scale)
    N, C = t.shape
    E, I2, C1 = w1.shape
    A = ids.shape[1]
    assert C1 == C and tuple(w2.shape) == (E, C, I2 // 2) and tuple(b1.shape) == (E, I2) and tuple(b2.shape) == (E, C)
    assert tuple(ids.shape) == tuple(weights.shape) == (N, A)
    dt = torch.float32 if t.device.type == "cpu" else t.dtype
    y = _apply_experts(t, ids, weights, lambda i: _take(w1, i).to(dt), b1, lambda i: _take(w2, i).to(dt), b2,
                       limit, dt).to(x.dtype)
    return y if residual is None else residual + y


def _take(t: torch.Tensor, i):
    """Expert i's slice (an int) or the slices of a LongTensor of experts (R,), stacked."""
    return t[i] if isinstance(i, int) else t.index_select(0, i)


def _gathers(R: int, I: int, C: int, dt) -> bool:
    """Whether the R routed rows' expert weights may be gathered at once (GATHER_BYTES), or go expert by expert."""
    return R * 3 * I * C * torch.empty((), dtype=dt).element_size() <= GATHER_BYTES


def _apply_experts(x, ids, weights, W1_of, b1, W2_of, b2, limit: float, dt) -> torch.Tensor:
    """The torch steps of the MoE op, whatever stores the experts: W1_of(i) / W2_of(i) give expert i's (2I, C) /
    (C, I) weights in dt, or for a LongTensor i (R,) theirs stacked. Few rows: every routed row's weights at once
    (no host sync: CUDA-graph safe); many: one expert at a time over its rows. Returns (N, C) in x's dtype."""
    N, C = x.shape
    A = ids.shape[1]
    R, I = N * A, b1.shape[1] // 2
    out_dtype = x.dtype
    x, b1, b2 = x.to(dt), b1.to(dt), b2.to(dt)
    if _gathers(R, I, C, dt):
        e = ids.reshape(R).long()
        xr = x.repeat_interleave(A, dim=0)  # (R, C): token n's copy for each of its A experts
        h = torch.bmm(W1_of(e), xr[:, :, None])[:, :, 0] + b1.index_select(0, e)  # (R, 2I)
        y = torch.bmm(W2_of(e), swiglu(h, limit).to(dt)[:, :, None])[:, :, 0] + b2.index_select(0, e)  # (R, C)
        return torch.einsum("na,nac->nc", weights, y.float().reshape(N, A, C)).to(out_dtype)
    out = torch.zeros(N, C, dtype=torch.float32, device=x.device)
    flat = ids.reshape(R).long()
    order = torch.argsort(flat, stable=True)  # routed rows grouped by expert
    counts = torch.bincount(flat, minlength=b1.shape[0]).tolist()
    start = 0
    for expert, n in enumerate(counts):
        if n == 0:
            continue
        rows = order[start:start + n]
        start += n
        tok, wgt = rows // A, weights.reshape(R)[rows]  # (n,) token of each routed row, and its weight
        h = torch.nn.functional.linear(x[tok], W1_of(expert), b1[expert])  # (n, 2I)
        y = torch.nn.functional.linear(swiglu(h, limit).to(dt), W2_of(expert), b2[expert])  # (n, C)
        out.index_add_(0, tok, y.float() * wgt[:, None])
    return out.to(out_dtype)


def moe_block(x, w, config, ops, trace=None, activations=None):
    """x (B, T, C) -> x + MoE(x). w: this layer's mlp weights (packed experts, or dense ones: moe_dense).
    activations: the experts' input rounding (moe's; Model checks at load that the backend runs it)."""
    B, T, C = x.shape
    x2, scale = x.reshape(B * T, C), w["norm.scale"]
    dense = "mlp1_weight" in w
    extra = {} if activations is None else {"activations": activations}  # backends without it never see it
    if dense:  # no kernel reads dense experts: the router and route from the backend, the experts in torch
        experts, moe_op = (w["mlp1_weight"], w["mlp1_bias"], w["mlp2_weight"], w["mlp2_bias"]), moe_dense
    else:
        experts, moe_op = (w["mlp1_weight.blocks"], w["mlp1_weight.scales"], w["mlp1_bias"], w["mlp2_weight.blocks"],
                           w["mlp2_weight.scales"], w["mlp2_bias"]), ops.moe
    fused = None if dense else getattr(ops, "routed_moe", None)
    if fused is not None:  # the whole block in one call (the Triton backend: 3 launches at decode)
        out, router_logits, ids, weights = fused(x2, w["gate.weight"], w["gate.bias"], scale,
                                                 config.experts_per_token, *experts, config.swiglu_limit, residual=x2)
    else:
        if getattr(ops, "linear", None) is not None:  # kernels that fuse the norm: the router's and the experts'
            router_logits = project(ops, x2, w["gate.weight"], w["gate.bias"], norm_scale=scale)  # (N, E)
            t, t_scale = x2, scale
        else:  # the norm once, as its own step
            t, t_scale = norm_for(ops)(x2, scale), None
            router_logits = project(ops, t, w["gate.weight"], w["gate.bias"])
        ids, weights = ops.route(router_logits, config.experts_per_token)
        out = moe_op(t, ids, weights, *experts, config.swiglu_limit,
                     residual=x2, norm_scale=t_scale, **extra)  # x + MoE(norm(x)), the add in the op's last kernel
    if trace is not None:
        trace.update(router_logits=router_logits, expert_ids=ids, expert_weights=weights)
    return out.reshape(B, T, C)
