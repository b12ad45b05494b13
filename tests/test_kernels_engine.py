"""The Triton backend plugged into the engine (seam B): the same logits as the torch backend for a prefill,
decode steps through the KV cache (ring buffers included) and a ragged batch, on a tiny random checkpoint.
CPU: Triton interpreter in fp32; GPU: bf16 as well."""
import os

import torch

if not torch.cuda.is_available():  # kernels on CPU tensors run only in the interpreter, chosen at import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from reference.config import Config  # noqa: E402

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
    from optimized.kernels.moe import _moe_router_kernel
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
