"""optimized/kernels/route.py: the Triton router (top-k + softmax) against route_ref, the engine's torch op
and reference/moe.py's route, ties included. On CPU through the Triton interpreter; on a GPU also bf16."""
import numpy as np
import pytest
import torch

from kernel_env import DEVICE, DTYPE_IDS, DTYPES  # before optimized.kernels: the interpreter without CUDA
from optimized.kernels.route import route, route_ref
from reference.moe import route as route_numpy


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("N,E,k", [(1, 4, 1), (5, 8, 2), (7, 32, 4), (3, 128, 4), (33, 6, 3), (2, 5, 5)])
@pytest.mark.parametrize("ties", [False, True])
def test_route_matches_refs(N, E, k, dtype, ties):
    g = torch.Generator().manual_seed(N * 1000 + E * 10 + k)
    if ties:  # small integers: many exact ties, which go to the lower expert id
        logits = torch.randint(-2, 3, (N, E), generator=g).float()
    else:
        logits = torch.randn(N, E, generator=g) * 3
    logits = logits.to(dtype)
    ids, w = route(logits.to(DEVICE), k)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32 and ids.shape == w.shape == (N, k)
    ids_ref, w_ref = route_ref(logits, k)
    assert torch.equal(ids.cpu(), ids_ref)
    torch.testing.assert_close(w.cpu(), w_ref, rtol=1e-6, atol=1e-7)
    ids_np, w_np = route_numpy(logits.double().numpy(), k)  # the ground truth, on the same rounded logits
    np.testing.assert_array_equal(ids.cpu().numpy(), ids_np)
    np.testing.assert_allclose(w.cpu().double().numpy(), w_np, rtol=1e-6, atol=1e-7)
    try:
        from optimized.ops import get_backend
    except ImportError:
        return
    ids_t, w_t = get_backend("torch").route(logits.to(DEVICE), k)
    assert torch.equal(ids.cpu(), ids_t.cpu())
    torch.testing.assert_close(w.cpu(), w_t.cpu(), rtol=1e-6, atol=1e-7)


def test_route_bad_input():
    with pytest.raises(ValueError, match="k=5"):
        route(torch.zeros(2, 4, device=DEVICE), 5)
    with pytest.raises(ValueError, match=r"\(N, E\)"):
        route(torch.zeros(2, 4, 3, device=DEVICE), 1)
