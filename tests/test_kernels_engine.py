"""The Triton backend plugged into the engine (seam B): the same logits as the torch backend for a prefill,
decode steps through the KV cache (ring buffers included) and a ragged batch, on a tiny random checkpoint.
CPU: Triton interpreter in fp32; GPU: bf16 as well."""
import pytest
import torch

from optimized.interpreter import interpret_on_cpu
from reference.config import Config

interpret_on_cpu()  # kernels on CPU tensors run only in the interpreter, chosen at import

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if DEVICE == "cuda" else [torch.float32]
# a window of 4 so that 11-token rows wrap the ring; GQA 4 over 2; top-2 of 4 experts
TINY = Config(num_hidden_layers=2, num_experts=4, experts_per_token=2, vocab_size=97, hidden_size=64,
              intermediate_size=64, swiglu_limit=7.0, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
              sliding_window=4, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
              rope_ntk_alpha=1.0, rope_ntk_beta=32.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def test_triton_backend_matches_torch_backend(dtype):
    synthetic = pytest.importorskip("optimized.synthetic")
    from optimized.generate import Engine
    from optimized.model import Model
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=dtype, seed=3)
    engines = {be: Engine(Model(weights, backend=be), context=32) for be in ("torch", "triton")}
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    prompt = [5, 17, 3, 88, 41, 2, 9, 60, 33, 12, 7]
    a, b = (engines[be].logits(prompt) for be in ("torch", "triton"))
    torch.testing.assert_close(b, a, **tol)
    rows = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10]]  # ragged; decoding then runs 6 steps, past the window
    res = {be: engines[be].generate(rows, 6) for be in ("torch", "triton")}
    if dtype == torch.float32:  # greedy tokens agree when the logits agree to 1e-4 (random logits: no near-ties)
        assert res["triton"].tokens == res["torch"].tokens


def test_decode_step_kernel_launches(monkeypatch):
    """What a batch-1 decode step launches with the Triton backend: 6 Triton kernels a layer (qkv with its RMSNorm,
    RoPE and the cache write; attention; out with the residual add; the MoE block's router/routing/grouping kernel,
    up, down with the residual add) and one for the final norm + unembedding. Launch gaps are a fair part of a decode
    step at batch 1 (bench/gpu.py's "engine kernels" row measures them on a GPU); a change that adds a launch per
    layer shows here first."""
    synthetic = pytest.importorskip("optimized.synthetic")
    from optimized.model import Model
    import optimized.kernels  # noqa: F401  (the backend's kernels, defined in the interpreter without CUDA)
    from optimized.kernels.moe_group import _moe_router_kernel
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=torch.float32, seed=4)
    model = Model(weights, backend="triton")
    cache = model.new_cache(1, 32)
    tok, pos = torch.tensor([[5]], device=DEVICE), torch.tensor([[3]], device=DEVICE)
    model.forward(tok, pos, cache, decode=True, static=True)  # compiles, makes the RoPE tables
    launches = []
    kernel_type = type(_moe_router_kernel)
    getitem = kernel_type.__getitem__

    def record(self, grid):
        launches.append(self.fn.__name__)
        return getitem(self, grid)
    monkeypatch.setattr(kernel_type, "__getitem__", record)
    model.forward(tok, pos, cache, decode=True, static=True)
    per_layer = ["_qkv_rope_cache_kernel", "_attn_fwd_kernel", "_linear_kernel", "_moe_router_kernel",
                 "_moe_up_gemv_kernel", "_moe_down_gemv_kernel"]
    assert launches == per_layer * TINY.num_hidden_layers + ["_linear_kernel"], launches


def test_prefill_writes_the_cache_without_a_host_sync(monkeypatch):
    """A ragged prefill (padding, rows past the window) on the Triton backend: RoPE and the cache write are one
    kernel a layer (kernels/rope_cache.py), never the torch cache write, whose nonzero is a host sync a layer (the
    GPU idles while the CPU catches up). The logits are test_triton_backend_matches_torch_backend's business; on a
    GPU, test_prefill_has_no_host_sync checks that the whole forward has none."""
    synthetic = pytest.importorskip("optimized.synthetic")
    from optimized import cache as cache_mod
    from optimized.model import Model
    from optimized.kernels.rope_cache import _rope_cache_kernel
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=torch.float32, seed=4)
    model = Model(weights, backend="triton")
    cache = model.new_cache(2, 32)
    tokens = torch.tensor([[0, 0, 0, 0, 5, 17, 3], [4, 5, 6, 7, 8, 9, 10]], device=DEVICE)
    pos = torch.tensor([[-1, -1, -1, -1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6]], device=DEVICE)

    def no_torch_write(*a, **kw):
        raise AssertionError("the torch cache write ran at a Triton prefill")
    monkeypatch.setattr(cache_mod, "write_tokens", no_torch_write)
    launches = []
    kernel_type = type(_rope_cache_kernel)
    getitem = kernel_type.__getitem__
    monkeypatch.setattr(kernel_type, "__getitem__", lambda self, grid: launches.append(self.fn.__name__)
                        or getitem(self, grid))
    model.forward(tokens, pos, cache)
    assert launches.count("_rope_cache_kernel") == TINY.num_hidden_layers, launches
    for n in range(TINY.num_hidden_layers):  # what each layer's cache holds: row 0 positions 0..2, row 1 its last S
        S = cache.pos[n].shape[1]
        want = [[p for p in range(3)], [p for p in range(7) if p > 6 - S]]
        held = [sorted(p for p in cache.pos[n][b].tolist() if p >= 0) for b in range(2)]
        assert held == want, (n, held)


@pytest.mark.skipif(DEVICE != "cuda", reason="host syncs are a CUDA matter")
def test_prefill_has_no_host_sync():
    """The Triton backend's prefill forward (ragged, past the window) runs with torch's sync debug mode on "error":
    any host sync in it (a nonzero, an .item(), a copy to the CPU) fails here."""
    synthetic = pytest.importorskip("optimized.synthetic")
    from optimized.model import Model
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=torch.bfloat16, seed=4)
    model = Model(weights, backend="triton")
    tokens = torch.tensor([[0, 0, 0, 0, 5, 17, 3], [4, 5, 6, 7, 8, 9, 10]], device=DEVICE)
    pos = torch.tensor([[-1, -1, -1, -1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6]], device=DEVICE)
    model.forward(tokens, pos, model.new_cache(2, 32))  # compiles, makes the RoPE tables
    cache = model.new_cache(2, 32)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model.forward(tokens, pos, cache)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(DEVICE != "cuda", reason="host syncs are a CUDA matter")
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_engine_run_has_no_host_sync(graphs):
    """Engine.run's chunked prefill (ragged rows, chunks of 3 tokens: 3 chunks) and decode steps run under torch's
    sync debug mode on "error": their inputs go to the GPU pinned and asynchronously (Engine._upload), so nothing
    waits between chunks or steps (blocking copies did: the host waited for all queued work, the GPU then idled
    while it prepared the next). The logits are those of the same run without the debug mode."""
    synthetic = pytest.importorskip("optimized.synthetic")
    from optimized.generate import Engine
    from optimized.model import Model
    weights = synthetic.synthetic_weights(TINY, device=DEVICE, dtype=torch.bfloat16, seed=4)
    engine = Engine(Model(weights, backend="triton"), context=32, prefill_chunk=3, cuda_graphs=graphs)
    rows = [[5, 17, 3], [4, 5, 6, 7, 8, 9, 10]]

    def run():
        out = [engine.run(engine.fresh_cache(2), rows, all_logits=True)]
        cache = engine.fresh_cache(2)
        out.append(engine.run(cache, rows))
        out += [engine.run(cache, [[t], [t + 1]]) for t in (88, 41, 2)]  # decode steps (graph captured the 1st time)
        return out

    want = run()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not graphs or engine._graphs, "the decode steps were not captured"
    assert all(torch.equal(a, b) for a, b in zip(got[0], want[0]))
    assert all(torch.equal(a, b) for a, b in zip(got[1:], want[1:]))
