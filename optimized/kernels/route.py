"""Router top-k + softmax in one Triton kernel: one program per token row, no host synchronisation.

Mirrors reference/moe.py `route`. Quirks, where they happen below:
  - softmax is over the k selected logits only, not over all experts.
  - ties (equal logits) go to the lower expert index: the arg-max takes the smallest index among the maxima.
Not here: the router's linear layer (a plain matmul in the engine).

Legend: N tokens, E experts, A experts per token (the seam calls it k).
"""
import torch
import triton
import triton.language as tl

from optimized.moe import route as torch_route


def route_ref(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's torch op (optimized/moe.py `route`, its torch path): (N, E) -> ids int32 (N, k) by descending
    logit (ties to the lower id), weights fp32 (N, k)."""
    return torch_route(router_logits, k, kernel=False)


@triton.jit
def _top_k_softmax(x, E, A: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_A: tl.constexpr):
    """One row's logits x (BLOCK_E,) fp32 (lanes >= E ignored) -> ids (BLOCK_A,) int32 and their softmax weights."""
    offs_e = tl.arange(0, BLOCK_E)
    offs_a = tl.arange(0, BLOCK_A)
    x = tl.where(offs_e < E, x, float("-inf"))
    top = tl.full([BLOCK_A], float("-inf"), tl.float32)
    ids = tl.zeros([BLOCK_A], tl.int32)
    for j in tl.static_range(A):
        m = tl.max(x, axis=0)
        # ties to the lower id: the smallest index holding the maximum (E itself if the row is all -inf/NaN)
        idx = tl.min(tl.where((x == m) & (offs_e < E), offs_e, BLOCK_E), axis=0)
        top = tl.where(offs_a == j, m, top)
        ids = tl.where(offs_a == j, idx, ids)
        x = tl.where(offs_e == idx, float("-inf"), x)
    p = tl.exp(top - tl.max(top, axis=0))  # softmax over the A chosen only; padding lanes are exp(-inf) = 0
    p = p / tl.sum(p, axis=0)
    return ids, p


@triton.jit
def _route_kernel(logits_ptr, ids_ptr, w_ptr, E, stride_row,
                  A: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_A: tl.constexpr):
    row = tl.program_id(0)
    offs_e = tl.arange(0, BLOCK_E)
    offs_a = tl.arange(0, BLOCK_A)
    x = tl.load(logits_ptr + row * stride_row + offs_e, mask=offs_e < E, other=float("-inf")).to(tl.float32)
    ids, p = _top_k_softmax(x, E, A, BLOCK_E, BLOCK_A)
    tl.store(ids_ptr + row * A + offs_a, ids, mask=offs_a < A)
    tl.store(w_ptr + row * A + offs_a, p, mask=offs_a < A)


def route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) -> ids int32 (N, k) by descending logit (ties to the lower id), weights fp32 (N, k)."""
    if router_logits.dim() != 2:
        raise ValueError(f"route: router_logits must be (N, E), got shape {tuple(router_logits.shape)}")
    N, E = router_logits.shape
    if not 1 <= k <= E:
        raise ValueError(f"route: k={k} must be in 1..E={E}")
    logits = router_logits if router_logits.stride(-1) == 1 else router_logits.contiguous()
    ids = torch.empty((N, k), dtype=torch.int32, device=logits.device)
    weights = torch.empty((N, k), dtype=torch.float32, device=logits.device)
    if N == 0:
        return ids, weights
    _route_kernel[(N,)](logits, ids, weights, E, logits.stride(0), A=k,
                        BLOCK_E=triton.next_power_of_2(E), BLOCK_A=triton.next_power_of_2(k))
    return ids, weights
