"""optimized/kernels/pdl.py: programmatic dependent launch changes when the decode kernels start, never what they
compute. CPU: it is never on (the interpreter has no grid dependency control), whatever ENABLED says, and the
kernels run as without it. GPU (Hopper): a batch-1 decode replayed from CUDA graphs gives the same logits bitwise
with PDL on and off, step after step (a missing wait would read a previous kernel's output early: a race).
tests/test_kernels_compile.py checks that PDL puts griddepcontrol in each decode kernel's PTX, and only then, and that
PDL=2 puts the projections' L2 weight prefetch before the wait."""
import importlib

import pytest
import torch

from kernel_env import DEVICE, needs_cuda  # before optimized.kernels: the interpreter switch
from test_kernels_engine import TINY

pdl = importlib.import_module("optimized.kernels.pdl")


def test_pdl_is_off_without_a_hopper_gpu(monkeypatch):
    monkeypatch.setattr(pdl, "ENABLED", True)
    assert not pdl.pdl_on("cpu")
    assert pdl.launch_args("cpu") == {"PDL": False}
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert not pdl.pdl_on(DEVICE)


def decode_steps(weights, steps, graphs):
    from optimized.generate import Engine
    from optimized.model import Model
    engine = Engine(Model(weights, backend="triton"), context=32, cuda_graphs=graphs)
    cache = engine.fresh_cache(1)
    engine.run(cache, [[5, 17, 3]])
    return torch.stack([engine.run(cache, [[t]]) for t in steps]).cpu(), engine


def test_engine_decodes_the_same_with_pdl_enabled(monkeypatch):
    """With ENABLED set, the engine decodes as without it (on CPU: PDL stays off; on a GPU: see the next test)."""
    synthetic = pytest.importorskip("optimized.synthetic")
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=torch.float32, seed=3)
    steps = [88, 41, 2, 9, 60, 33]  # past the window of 4
    off, _ = decode_steps(weights, steps, graphs=False)
    monkeypatch.setattr(pdl, "ENABLED", True)
    on, _ = decode_steps(weights, steps, graphs=False)
    assert torch.equal(on, off)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_pdl_cuda_graph_decode_is_bitwise_the_same(dtype, monkeypatch):
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs Hopper (sm_90) or later")
    synthetic = pytest.importorskip("optimized.synthetic")
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=dtype, seed=3)
    steps = [88, 41, 2, 9, 60, 33, 7, 7, 1, 96]
    off, engine = decode_steps(weights, steps, graphs=True)
    assert engine._graphs, "the decode steps were not captured"
    monkeypatch.setattr(pdl, "ENABLED", True)
    for prefetch in (True, False):  # PDL with the projections' L2 weight prefetch before the wait, and without
        monkeypatch.setattr(pdl, "PREFETCH", prefetch)
        assert pdl.pdl_on(DEVICE) and pdl.launch_args(DEVICE) == {"PDL": 2 if prefetch else 1, "launch_pdl": True}
        on, engine = decode_steps(weights, steps, graphs=True)
        assert engine._graphs, "the decode steps with PDL were not captured"
        assert torch.equal(on, off), (prefetch, (on - off).abs().max())
