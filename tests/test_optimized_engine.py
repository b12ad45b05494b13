"""The engine (optimized/) against the reference on tiny checkpoints written by reference.writer, both layouts.

Bounds, set by measurement on these checkpoints (logits of magnitude ~3-5) and written down here:
  - float32: max |logit - reference| measured ~3e-6; bound 1e-4 (float32 rounding through 3 layers; a
    wrong quirk moves logits by >1e-2).
  - bfloat16: per position, max |logit - reference| measured 0.02-0.03 (bf16 has 8 bits: relative 4e-3 per
    rounding), except where bf16 flips a near-tied routing decision (measured 0.82 at one position, 0.2-0.4 at
    the next three): median bound 0.05, worst bound 1.5, greedy agreement >= 85% of positions.
  - incremental decode, ragged batches and ring caches compute the same sums in another grouping: float32
    atol 1e-5, bfloat16 atol 0.05.
"""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from optimized import checkpoint as ockpt
from optimized import memory
from optimized.adapter import OptimizedImpl
from optimized.generate import Engine, RequestError
from optimized.model import Model
from optimized.sampling import Sampling, nucleus, sample
from reference.config import GPT_OSS_20B, GPT_OSS_120B, Config
from reference.model import Model as RefModel
from reference.tensorfile import CheckpointError
from reference.writer import write_checkpoint

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared 2-core machine
CFG = Config(num_hidden_layers=3, num_experts=4, experts_per_token=2, vocab_size=97, hidden_size=64,
             intermediate_size=32, swiglu_limit=7.0, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
             sliding_window=4, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
             rope_ntk_alpha=1.0, rope_ntk_beta=32.0)  # layers 0, 2 windowed (W=4), layer 1 full
TOKENS = [5, 17, 3, 88, 42, 42, 7, 0, 96, 13, 61, 29, 8, 71]  # 14 > 3 windows
TOL = {"fp32": 1e-5, "bf16": 0.05}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimized")
    return {layout: write_checkpoint(root / layout, CFG, seed=3, layout=layout) for layout in ("original", "hf")}


@pytest.fixture(scope="module")
def ref_logits(ckpts):
    return RefModel(ckpts["original"]).logits(TOKENS)


@pytest.fixture(scope="module")
def impls(ckpts):
    return {d: OptimizedImpl(str(ckpts["original"]), d, context=64) for d in ("fp32", "bf16")}


def test_fp32_logits_match_reference_both_layouts(ckpts, ref_logits):
    for layout, path in ckpts.items():
        got = OptimizedImpl(str(path), "fp32").logits(TOKENS)
        assert got.shape == (len(TOKENS), CFG.vocab_size)
        assert np.abs(got - ref_logits).max() < 1e-4, layout


def test_bf16_logits_within_bound(impls, ref_logits):
    """bf16 rounding can flip a near-tied routing decision (here layer 1, position 1: top-2 margin 0.0004),
    which moves that position's logits by ~0.8 and its neighbours' (through attention) by ~0.3; elsewhere the
    error is bf16 rounding (~0.02). So: a typical-position bound, a worst-case bound, greedy agreement."""
    got = impls["bf16"].logits(TOKENS)
    err = np.abs(got - ref_logits).max(axis=-1)  # per position
    assert np.median(err) < 0.05 and err.max() < 1.5, err
    assert (got.argmax(-1) == ref_logits.argmax(-1)).mean() >= 0.85


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("prefill", [1, 3, 9])
def test_incremental_decode_equals_full_forward(impls, dtype, prefill):
    im = impls[dtype]
    np.testing.assert_allclose(im.decode_logits(TOKENS, prefill), im.logits(TOKENS), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_ragged_batch_equals_alone(impls, dtype):
    im = impls[dtype]
    batch = [TOKENS, TOKENS[:3], [9], TOKENS[4:13]]
    for row, got in zip(batch, im.batch_logits(batch)):
        np.testing.assert_allclose(got, im.logits(row), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("chunk", [3, 1024])
def test_ring_cache_identical_to_full_cache(ckpts, monkeypatch, chunk):
    """Windowed layers keep W=4 slots; a cache that keeps every position (same masks) gives the same logits,
    through chunked prefill (chunks of 3 cross the ring) and one-token decode."""
    from optimized import cache as cache_mod
    engine = Engine(Model.load(ckpts["original"], "cpu", torch.float32), context=32, prefill_chunk=chunk)
    c = engine.fresh_cache(1)
    assert c.k[0].shape[1] == CFG.sliding_window and c.k[1].shape[1] == 32  # the ring is really a ring
    ring = [engine.run(c, [TOKENS[:9]], all_logits=True)[0]] + [engine.run(c, [[t]]) for t in TOKENS[9:]]
    monkeypatch.setattr(cache_mod, "layer_slots", lambda config, layer, context: context)
    engine._cache = None
    c = engine.fresh_cache(1)
    assert c.k[0].shape[1] == 32
    full = [engine.run(c, [TOKENS[:9]], all_logits=True)[0]] + [engine.run(c, [[t]]) for t in TOKENS[9:]]
    torch.testing.assert_close(torch.cat(ring), torch.cat(full), atol=TOL["fp32"], rtol=0)  # sum order only


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_last_logits_run_the_last_layer_for_those_tokens_only(ckpts, monkeypatch, backend):
    """forward(last=...) with several tokens: the last layer's attention and MoE run for the B wanted tokens
    alone (counted), the caches end bitwise as a full forward leaves them (every token's keys and values), and the
    logits equal the full forward's at those tokens (the same sums in another grouping: TOL). Ragged rows, one
    wanted token on padding (its logits are never used), prompts past the window."""
    from optimized import moe as moe_mod
    model = Model.load(ckpts["original"], "cpu", torch.float32, backend=backend)
    tokens = torch.tensor([TOKENS[:10], [0] * 3 + TOKENS[:7], [0] * 10])
    pos = torch.tensor([list(range(10)), [-1] * 3 + list(range(7)), [-1] * 10])
    last = torch.tensor([9, 4, 0])
    full_cache, cache = model.new_cache(3, 32), model.new_cache(3, 32)
    want = model.forward(tokens, pos, full_cache)[torch.arange(3), last]
    rows_seen = []
    block = moe_mod.moe_block
    monkeypatch.setattr("optimized.model.moe_block",
                        lambda x, *a, **k: rows_seen.append(tuple(x.shape[:2])) or block(x, *a, **k))
    got = model.forward(tokens, pos, cache, last=last)
    assert rows_seen == [(3, 10)] * (CFG.num_hidden_layers - 1) + [(3, 1)]
    for a, b in zip(cache.tensors(), full_cache.tensors()):
        assert torch.equal(a, b)
    torch.testing.assert_close(got[:2], want[:2], atol=TOL["fp32"], rtol=0)


def test_rope_table_is_cos_sin_and_bounded_by_the_cache(ckpts):
    """The model's RoPE tables (one gather a step instead of the angle math) hold cos_sin's numbers exactly, and a
    position the cache cannot hold (>= its context: a full layer would wrap onto older keys) is an error, not a
    silently wrong angle."""
    from optimized.rope import cos_sin
    model = Model.load(ckpts["original"], "cpu", torch.float32)
    cos_t, sin_t = model.rope_table(40)
    cos, sin = cos_sin(torch.arange(40), model.inv_freq, model.concentration)
    assert cos_t.shape == (40, CFG.head_dim // 2) and torch.equal(cos_t, cos) and torch.equal(sin_t, sin)
    assert model.rope_table(40)[0] is cos_t  # made once per context size
    cache = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="beyond the cache's context of 8"):
        model.forward(torch.tensor([[1]]), torch.tensor([[8]]), cache, decode=True)


def test_plan_memory_equals_allocated(ckpts):
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model = Model.load(ckpts["hf"], "cpu", torch_dtype)
        for context, batch in ((3, 1), (64, 2)):
            plan = memory.plan_memory(CFG, context, batch, dtype, device="cpu")
            cache = model.new_cache(batch, context)
            assert plan["weights"] == model.weights.nbytes()
            assert plan["kv_cache"] == cache.nbytes()
            packed = sum(t.nbytes for n, t in model.weights.tensors.items() if t.dtype == torch.uint8)
            assert plan["experts_packed"] == packed
            assert plan["total"] == plan["weights"] + plan["kv_cache"] + plan["workspace"] > plan["weights"]


def test_fp32_on_cpu_keeps_bf16_stored_matrices_bf16(tmp_path, ckpts, ref_logits):
    """float32 on CPU: matrices the file stores in bf16 stay bf16 (exact widening, half the bytes); a file that
    stores float32 keeps float32; the logits are the float32 model's either way."""
    m = Model.load(ckpts["original"], "cpu", torch.float32)
    t = m.weights.tensors
    assert t["unembedding.weight"].dtype == t["embedding.weight"].dtype == torch.bfloat16
    assert t["block.0.attn.qkv.weight"].dtype == t["block.0.mlp.gate.weight"].dtype == torch.bfloat16
    assert t["block.0.attn.qkv.bias"].dtype == t["block.0.mlp.mlp1_bias"].dtype == torch.float32
    assert m.dtype == torch.float32 and m.new_cache(1, 4).k[0].dtype == torch.float32
    f32 = write_checkpoint(tmp_path / "f32", CFG, seed=3, float_dtype="F32")
    m32 = Model.load(f32, "cpu", torch.float32)
    assert m32.weights.tensors["unembedding.weight"].dtype == torch.float32
    assert memory.plan_memory(CFG, 8, 1, "fp32")["weights"] > m.weights.nbytes()  # CUDA plan: float32 copies
    for path in (ckpts["original"], f32):
        got = Engine(Model.load(path, "cpu", torch.float32), context=64).logits(TOKENS).numpy()
        assert np.abs(got - RefModel(path).logits(TOKENS)).max() < 1e-4


def test_plan_memory_real_shapes_fit():
    big = memory.plan_memory(GPT_OSS_120B, 32768, 1, "bf16")
    assert big["total"] < 80e9 and big["weights"] > 60e9  # 120b: ~61 GiB of weights, 1.1 GiB of KV at 32k
    small = memory.plan_memory(GPT_OSS_20B, 32768, 1, "bf16")
    assert small["total"] < 16e9 and small["experts_packed"] > 9e9
    # a ring keeps the windowed layers' cache independent of the context
    grow = memory.plan_memory(GPT_OSS_20B, 65536, 1)["kv_cache"] - small["kv_cache"]
    assert grow == 12 * 32768 * (2 * 8 * 64 * 2 + 8)  # only the 12 full layers grow


def test_default_prefill_tokens_fill_the_moe_tiles():
    """A prefill step's tokens grow until an expert's expected rows fill two of the MoE kernel's prefill tiles
    (each tile decodes its expert's weights once): 20b 2048 tokens, 120b 8192; the torch backend keeps 1024.
    Half as many would not fill them, and 120b at 32k context still fits one 80 GB card with them."""
    from types import SimpleNamespace

    from optimized.generate import PREFILL_CHUNK, PREFILL_CHUNK_MAX, default_prefill_tokens
    from optimized.ops import get_backend
    triton_ops = get_backend("triton")
    assert triton_ops.moe_tile_rows(torch.bfloat16) == 128 and triton_ops.moe_tile_rows(torch.float32) == 64
    want = {("20b", torch.bfloat16): 2048, ("120b", torch.bfloat16): 8192, ("20b", torch.float32): 1024,
            ("120b", torch.float32): 4096}
    for (label, dt), tokens in want.items():
        cfg = GPT_OSS_20B if label == "20b" else GPT_OSS_120B
        model = SimpleNamespace(config=cfg, ops=triton_ops, dtype=dt)
        assert default_prefill_tokens(model) == tokens, (label, dt)
        rows = lambda n: n * cfg.experts_per_token / cfg.num_experts  # an expert's expected rows in n tokens
        tile = triton_ops.moe_tile_rows(dt)
        assert rows(tokens) >= 2 * tile and (tokens == PREFILL_CHUNK or rows(tokens // 2) < 2 * tile)
        torch_model = SimpleNamespace(config=cfg, ops=get_backend("torch"), dtype=dt)
        assert default_prefill_tokens(torch_model) == PREFILL_CHUNK
    assert default_prefill_tokens(SimpleNamespace(config=dataclasses.replace(GPT_OSS_120B, num_experts=4096),
                                                  ops=triton_ops, dtype=torch.bfloat16)) == PREFILL_CHUNK_MAX
    assert memory.plan_memory(GPT_OSS_120B, 32768, 1, "bf16", prefill_chunk=8192)["total"] < 80e9


def test_engine_prefill_chunk_per_row(ckpts):
    """Engine.chunk_for: the tokens a prefill step gives each row. By default the backend's prefill tokens shared
    among the rows (a batch's step stays as big as one row's, its memory too); a given prefill_chunk as is; a bad
    one refused."""
    model = Model.load(ckpts["original"], "cpu", torch.float32)
    engine = Engine(model, context=32)
    assert engine.prefill_tokens == 1024  # the torch backend
    assert [engine.chunk_for(b) for b in (1, 2, 3, 64, 4096)] == [1024, 512, 341, 16, 1]
    assert [Engine(model, context=32, prefill_chunk=3).chunk_for(b) for b in (1, 64)] == [3, 3]
    for bad in (0, -4, 2.5, True, "64"):
        with pytest.raises(ValueError, match="prefill_chunk must be a positive integer"):
            Engine(model, context=32, prefill_chunk=bad)
    rows = [TOKENS[:9], TOKENS[:4], TOKENS]  # ragged, in 3 chunks a row at chunk_for(3) = 5 (as 15 // 3)
    engine.prefill_tokens = 15
    many = engine.run(engine.fresh_cache(3), rows, all_logits=True)
    one = Engine(model, context=32, prefill_chunk=32)
    assert all(torch.allclose(a, one.run(one.fresh_cache(1), [r], all_logits=True)[0], atol=1e-5, rtol=0)
               for a, r in zip(many, rows))


def test_sampling_properties():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g) * 3
    assert torch.equal(sample(logits, Sampling(temperature=0), None), logits.argmax(-1))
    probs = torch.softmax(logits, -1)
    kept = nucleus(probs, 0.6)
    for b in range(4):
        order = torch.argsort(probs[b], descending=True)
        mass = torch.cumsum(probs[b][order], 0)
        n = int((mass < 0.6).sum()) + 1  # the smallest prefix reaching 0.6
        assert set(torch.nonzero(kept[b]).flatten().tolist()) == set(order[:n].tolist())
        torch.testing.assert_close(kept[b].sum(), torch.tensor(1.0))
    draws = torch.stack([sample(logits, Sampling(1.0, 0.6, 7), g) for _ in range(200)])
    assert bool((kept.gather(1, draws.T) > 0).all())  # every draw inside its nucleus
    a = [sample(logits, Sampling(1.0, 0.9, 5), Sampling(1.0, 0.9, 5).generator("cpu")) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    runs = {tuple(sample(logits, Sampling(1.0), Sampling(seed=s).generator("cpu")).tolist()) for s in range(8)}
    assert len(runs) > 1  # different seeds do sample differently
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0)


def test_generate_greedy_batch_stops_and_streams(ckpts):
    engine = Engine(Model.load(ckpts["original"], "cpu", torch.float32), context=64)
    ref = RefModel(ckpts["original"])
    cache, toks = ref.new_cache(), []
    logits = ref.forward(TOKENS[:5], cache)
    for _ in range(6):  # reference greedy continuation
        toks.append(int(logits[-1].argmax()))
        logits = ref.forward([toks[-1]], cache)
    alone = engine.generate([TOKENS[:5]], 6).tokens[0]
    assert alone == toks
    seen = []
    r = engine.generate([TOKENS[:5], TOKENS[:2]], 6, stop_tokens=[toks[2]], on_token=lambda b, t: seen.append((b, t)))
    assert r.tokens[0] == toks[:3] and r.stopped[0]  # stopped on (and kept) the stop token
    assert r.tokens[1] == engine.generate([TOKENS[:2]], 6, stop_tokens=[toks[2]]).tokens[0]
    assert [t for b, t in seen if b == 0] == r.tokens[0] and [t for b, t in seen if b == 1] == r.tokens[1]
    s1 = engine.generate([TOKENS[:4]], 8, Sampling(0.8, 0.9, seed=11)).tokens
    assert s1 == engine.generate([TOKENS[:4]], 8, Sampling(0.8, 0.9, seed=11)).tokens
    # each step is launched before the previous step's tokens are read (generate's look-ahead): up to the last
    # position of the cache, and with a row stopping, the tokens are those of plain step-by-step decoding
    full = Engine(engine.model, context=11)  # 5 + 7 - 1 positions: the prompt, then all but the last new token
    r = full.generate([TOKENS[:5], TOKENS[:2]], 7, stop_tokens=[toks[2]])
    cache, steps = full.fresh_cache(1), []
    logits = full.run(cache, [TOKENS[:2]])
    while len(steps) < 7 and toks[2] not in steps:
        steps.append(int(logits[0].argmax()))
        logits = full.run(cache, [[steps[-1]]])
    assert r.tokens == [toks[:3], steps] and r.stopped == [True, toks[2] in steps]
    stop_step = [2, len(steps) - 1 if toks[2] in steps else 7]  # a row is fed while it has not stopped
    assert r.decode_tokens == sum(s < stop for s in range(min(6, max(stop_step))) for stop in stop_step)


def test_bad_input_rejected_and_engine_still_works(ckpts):
    engine = Engine(Model.load(ckpts["original"], "cpu", torch.float32), context=16)
    before = engine.logits(TOKENS[:5])
    cases = [([[1, 97]], 1, "token id 97 at position 1 is outside the vocabulary"),
             ([[1, -1]], 1, "token id -1"), ([[]], 1, "prompt 0 is empty"), ([], 1, "at least one prompt"),
             ([[1] * 17], 1, "more than the context of 16"), ([[1] * 10], 8, "need 17 cache positions"),
             ([[1], [2, 1.5]], 1, "must be integers"), ([[1]], -1, "max_new_tokens")]
    for prompts, n, message in cases:
        with pytest.raises(RequestError, match=message):
            engine.generate(prompts, n)
    torch.testing.assert_close(engine.logits(TOKENS[:5]), before, atol=0, rtol=0)
    assert engine.generate([[1] * 10], 7).tokens[0]  # exactly fits


def test_bad_checkpoints_rejected(tmp_path, ckpts, monkeypatch):
    bad = write_checkpoint(tmp_path / "cfg", CFG, seed=3)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(cfg, hidden_size=96)))  # does not match the tensors
    with pytest.raises(CheckpointError, match="shape"):
        Model.load(bad, "cpu")
    name = "block.1.mlp.mlp2_weight.scales"
    scales = np.full((4, 64, 1), 120, dtype=np.uint8)
    scales[2, 5, 0] = 0xFF
    nan = write_checkpoint(tmp_path / "nan", CFG, seed=3, overrides={name: scales})
    with pytest.raises(CheckpointError, match="NaN scale"):
        Model.load(nan, "cpu")

    def oom(host, device, dtype):
        if host.dtype == torch.uint8 and host.dim() == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return host.to(device=device, dtype=dtype)

    monkeypatch.setattr(ockpt, "place", oom)
    with pytest.raises(ockpt.LoadError, match=r"placing 'block.0.mlp.mlp1_weight.blocks' \[4, 64, 2, 16\]"):
        Model.load(ckpts["original"], "cpu")


def test_adapter_ops_and_intermediates(impls, ckpts):
    im = impls["fp32"]
    stages = im.intermediates(TOKENS[:6])
    ref_stages = {}
    RefModel(ckpts["original"]).forward(TOKENS[:6], RefModel(ckpts["original"]).new_cache(), capture=ref_stages)
    for key in ("embedding", "block.0.attn", "block.2.mlp", "norm", "logits"):
        np.testing.assert_allclose(stages[key], ref_stages[key], atol=1e-4, rtol=0)
    ids, w = im.op_route(np.array([[1.0, 3.0, 3.0, 0.0]]), 2)
    assert ids.tolist() == [[1, 2]] and np.allclose(w, 0.5)


def test_cli_smoke(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "optimized", *a], capture_output=True, text=True,  # noqa
                                    timeout=120)
    r = run("generate", "--tokens", "1,2,3", "--max-new-tokens", "4", "--temperature", "0", "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    assert "bundled tiny checkpoint" in r.stderr
    new = r.stdout.split("new:")[1].split("\n")[0].split()
    assert len(new) == 4 and all(0 <= int(t) < 512 for t in new)
    assert "tok/s" in r.stdout
    r = run("chat", "--message", "hi")
    assert r.returncode != 0 and "generate --tokens" in r.stderr
    r = run("generate", "--tokens", "1,2,600")
    assert r.returncode != 0 and "token id 600" in r.stderr


def test_triton_backend_plugs_into_the_engine(ckpts):
    """The seam end to end: the engine on backend "triton" (the Triton interpreter on CPU) gives the torch
    backend's fp32 logits. Skipped only where optimized.kernels cannot be imported (then the error is tested
    in test_optimized_ops.py::test_backend_registry)."""
    from optimized import ops
    try:
        ops.get_backend("triton")
    except ops.BackendError as e:
        pytest.skip(str(e))
    model = Model.load(ckpts["original"], "cpu", torch.float32, backend="triton")
    torch_model = Model(model.weights)  # same tensors, torch ops
    tri = Engine(model, context=16).logits(TOKENS[:6])
    ref = Engine(torch_model, context=16).logits(TOKENS[:6])
    torch.testing.assert_close(tri, ref, atol=1e-4, rtol=0)


def test_chat_streams_channels_and_runs_on_a_harmony_vocabulary(tmp_path):
    import io

    from harmony import HarmonyEncodingName, Role, StreamableParser, load_harmony_encoding
    from optimized.__main__ import ChannelPrinter
    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    reply = enc.encode("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>"
                       "Hello!<|return|>", allowed_special="all")
    out = io.StringIO()
    printer = ChannelPrinter(enc, StreamableParser(enc, role=Role.ASSISTANT), out)
    for t in reply:
        printer.feed(t)
    printer.finish()
    assert out.getvalue() == "\n[analysis] think\n[final] Hello!"
    out = io.StringIO()
    printer = ChannelPrinter(enc, StreamableParser(enc, role=Role.ASSISTANT), out)
    for t in enc.encode("<|message|>x<|call|><|end|>", allowed_special="all"):  # <|end|> after <|call|>: raw
        printer.feed(t)
    printer.finish()
    assert "[unparsed" in out.getvalue() and "[raw]" in out.getvalue()
    # end to end on a 1-layer random model with o200k_harmony's vocabulary (the output is meaningless)
    path = write_checkpoint(tmp_path / "v", dataclasses.replace(CFG, vocab_size=201088, num_hidden_layers=1), seed=1)
    r = subprocess.run([sys.executable, "-m", "optimized", "chat", "--checkpoint", str(path), "--message", "Hi",
                        "--max-new-tokens", "5", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tok/s prefill" in r.stdout and "bundled" not in r.stderr


def test_synthetic_weights_have_the_loaded_layout():
    from optimized.synthetic import synthetic_weights
    w = synthetic_weights(CFG, "cpu", torch.bfloat16, seed=1)
    assert w.nbytes() == memory.plan_memory(CFG, 8, 1, "bf16")["weights"]
    assert w.mlp[0]["mlp1_weight.blocks"].dtype == torch.uint8 and w.attn[0]["sinks"].dtype == torch.float32
    logits = Engine(Model(w), context=16).logits(TOKENS[:5])
    assert logits.shape == (5, CFG.vocab_size) and bool(torch.isfinite(logits).all()) and logits.std() > 0.1


def test_cuda_graph_eligibility_by_backend(ckpts):
    """Decode is captured in a CUDA graph when its step has no host sync: the torch MoE only on its gather path
    (the routed experts' scratch within GATHER_BYTES), the Triton MoE always (it reads the packed experts in
    place). Checked on the decision itself: capturing needs a GPU."""
    from types import SimpleNamespace
    from optimized import moe as moe_mod
    engine = Engine(Model.load(ckpts["original"], "cpu", torch.float32), context=16)
    c = engine.config
    too_many = moe_mod.GATHER_BYTES // (c.experts_per_token * 3 * c.intermediate_size * c.hidden_size * 4) + 1
    assert engine._graphable(1) and not engine._graphable(too_many)
    engine.model.ops = SimpleNamespace(name="triton")
    assert engine._graphable(too_many)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fused_cpu_decode_block_equals_step_by_step(ckpts, monkeypatch, dtype):
    """The C decode block (RoPE, cache write, attention in one call) against attention.py's step-by-step torch
    path: ragged rows, ring layers wrapping (14 tokens > window 4), same positions and keys in the cache."""
    import shutil
    from optimized import attention as att
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: no fused decode block to compare")
    model = Model.load(ckpts["original"], "cpu", torch.float32 if dtype == "fp32" else torch.bfloat16)
    calls, block = [], att.decode_block_cpu
    monkeypatch.setattr(att, "decode_block_cpu", lambda *a: calls.append(1) or block(*a))
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(att, "FUSED_DECODE", fused)
        engine = Engine(model, context=32)
        cache = engine.fresh_cache(2)
        engine.run(cache, [TOKENS[:5], TOKENS[:2]])
        logits = torch.stack([engine.run(cache, [[t], [TOKENS[-1 - i]]]) for i, t in enumerate(TOKENS[5:])])
        runs[fused] = logits, [t.clone() for t in cache.tensors()]
    assert len(calls) == CFG.num_hidden_layers * len(TOKENS[5:])  # the fused run took the C block, every layer
    (fused_logits, fused_cache), (step_logits, step_cache) = runs[True], runs[False]
    torch.testing.assert_close(fused_logits, step_logits, atol=TOL[dtype], rtol=0)
    L = CFG.num_hidden_layers
    for a, b in zip(fused_cache[2 * L:], step_cache[2 * L:]):  # slot positions: identical
        assert torch.equal(a, b)
    for a, b in zip(fused_cache[:2 * L], step_cache[:2 * L]):  # keys and values
        torch.testing.assert_close(a.float(), b.float(), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_static_decode_equals_dynamic_decode(ckpts, monkeypatch, backend):
    """The decode step as a CUDA graph captures it (static=True: every cache slot attended, empty ones masked by
    position) gives the dynamic step's logits, on the torch ops (C decode block off) and on the Triton ops
    (interpreter; its RoPE + cache-write kernel), for a ragged batch, across the ring of the windowed layers."""
    from optimized import attention as att
    from optimized import ops
    if backend == "triton":
        try:
            ops.get_backend("triton")
        except ops.BackendError as e:
            pytest.skip(str(e))
    monkeypatch.setattr(att, "FUSED_DECODE", False)
    model = Model.load(ckpts["original"], "cpu", torch.float32, backend=backend)
    engine = Engine(model, context=16, max_batch=2)
    runs = []
    for static in (False, True):
        cache = engine.fresh_cache(2)
        engine.run(cache, [TOKENS[:3], TOKENS[:6]])  # ragged: the rows decode at different positions
        steps = []
        for t in TOKENS[6:12]:
            tok = torch.tensor([[t], [(t * 7) % CFG.vocab_size]])
            pos = torch.tensor([[n] for n in cache.lengths])
            steps.append(model.forward(tok, pos, cache, decode=True, static=static)[:, 0])
            cache.lengths = [n + 1 for n in cache.lengths]
        runs.append(torch.stack(steps))
    torch.testing.assert_close(runs[1], runs[0], atol=TOL["fp32"], rtol=0)


# -- dense experts (a dequantized or bf16 fine-tuned checkpoint: HF's gate_up_proj / down_proj) ----------------

@pytest.fixture(scope="module")
def dense_ckpts(tmp_path_factory, ckpts):
    """The MXFP4 checkpoint's dense twin (same model) and random dense experts (off the MXFP4 grid)."""
    from reference.writer import write_dequantized
    root = tmp_path_factory.mktemp("dense")
    return {"twin": write_dequantized(ckpts["original"], root / "twin"),
            "random": write_checkpoint(root / "random", CFG, seed=8, layout="hf", experts="dense")}


@pytest.mark.parametrize("which", ["twin", "random"])
def test_dense_experts_match_reference(dense_ckpts, ckpts, which, monkeypatch):
    """fp32 logits against the reference's (1e-4, as the packed model), through the gather path (few rows) and
    the expert-by-expert path (GATHER_BYTES 0), incremental decode and a ragged batch as for the packed model;
    the twin gives the packed model's logits; bf16 within the packed model's bounds."""
    from optimized import moe as moe_mod
    path = dense_ckpts[which]
    ref = RefModel(path).logits(TOKENS)
    im = OptimizedImpl(str(path), "fp32", context=64)
    assert im.engine.model.weights.experts == "dense" and "mlp1_weight" in im.engine.model.weights.mlp[0]
    assert im.engine.model.weights.mlp[0]["mlp1_weight"].shape == (CFG.num_experts, 2 * CFG.intermediate_size,
                                                            CFG.hidden_size)
    got = im.logits(TOKENS)
    assert np.abs(got - ref).max() < 1e-4
    np.testing.assert_allclose(im.decode_logits(TOKENS, 3), got, atol=TOL["fp32"], rtol=0)
    batch = [TOKENS, TOKENS[:3], [9]]
    for row, out in zip(batch, im.batch_logits(batch)):
        np.testing.assert_allclose(out, im.logits(row), atol=TOL["fp32"], rtol=0)
    monkeypatch.setattr(moe_mod, "GATHER_BYTES", 0)
    np.testing.assert_allclose(im.logits(TOKENS), got, atol=TOL["fp32"], rtol=0)
    monkeypatch.undo()
    if which == "twin":
        np.testing.assert_allclose(got, OptimizedImpl(str(ckpts["original"]), "fp32").logits(TOKENS),
                                   atol=TOL["fp32"], rtol=0)
    bf16 = OptimizedImpl(str(path), "bf16", context=64).logits(TOKENS)
    err = np.abs(bf16 - ref).max(axis=-1)
    assert np.median(err) < 0.05 and err.max() < 1.5, err


def test_dense_plan_memory_and_graph_eligibility(dense_ckpts):
    from types import SimpleNamespace
    from optimized import moe as moe_mod
    model = Model.load(dense_ckpts["random"], "cpu", torch.bfloat16)
    plan = memory.plan_memory(CFG, 16, 1, "bf16", device="cpu", experts="dense")
    assert plan["weights"] == model.weights.nbytes()
    dense = sum(t.nbytes for n, t in model.weights.tensors.items() if n.endswith(("mlp1_weight", "mlp2_weight")))
    assert plan["experts_packed"] == dense > memory.plan_memory(CFG, 16, 1, "bf16", device="cpu")["experts_packed"]
    engine = Engine(model, context=16)
    c = engine.config
    too_many = moe_mod.GATHER_BYTES // (c.experts_per_token * 3 * c.intermediate_size * c.hidden_size * 2) + 1
    engine.model.ops = SimpleNamespace(name="triton")  # no kernel reads dense experts: the torch bound holds
    assert engine._graphable(1) and not engine._graphable(too_many)


def test_dense_experts_on_the_triton_backend(dense_ckpts):
    """Backend "triton" with dense experts: its router, route and projections, the experts in torch (moe_dense);
    the torch backend's logits. Skipped where optimized.kernels cannot be imported."""
    from optimized import ops
    try:
        ops.get_backend("triton")
    except ops.BackendError as e:
        pytest.skip(str(e))
    model = Model.load(dense_ckpts["random"], "cpu", torch.float32, backend="triton")
    tri = Engine(model, context=16).logits(TOKENS[:6])
    ref = Engine(Model(model.weights), context=16).logits(TOKENS[:6])
    torch.testing.assert_close(tri, ref, atol=1e-4, rtol=0)
