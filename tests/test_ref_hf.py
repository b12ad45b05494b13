"""The reference against an independent port: HF transformers' GptOssForCausalLM loading a tiny HF-layout
checkpoint written by reference/writer.py (YaRN on, GQA 4 over 2, sliding window 4, 12 tokens).

Two comparisons, each with its tolerance explained:
  - HF as shipped, float32: every difference is HF's float32 rounding (its RoPE table and its matmuls);
    measured 1.5e-6 max abs on logits of size ~3, the bound is 2e-5 (float32 eps 6e-8 x logit scale x the
    ~20 roundings a logit accumulates, with margin). Getting any quirk wrong moves logits by ~1 (test_ref_model).
  - HF in float64, with its two deliberate float32 islands replaced by the same formulas in float64: the RoPE
    table (recomputed from gpt-oss's formula) and RMSNorm (HF's casts to float32 and back). Everything else
    (attention, sinks, GQA, window, MoE, MXFP4, the HF name mapping, HF's sliding KV cache during decoding) is
    compared at 1e-10 (measured 3e-15). HF's own float32 YaRN frequencies are checked separately at 1e-6.
Needs the optional test dependencies (transformers, accelerate); skipped without them. Nothing is downloaded.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # dequantizes MXFP4 on CPU

from conformance.impls.transformers import load_hf_model  # noqa: E402
from reference.model import Model  # noqa: E402

from helpers import TINY, write_tiny  # noqa: E402
from test_ref_rope import gpt_oss_torch_formula  # noqa: E402

TOKENS = [5, 17, 0, 96, 42, 42, 7, 63, 18, 2, 77, 31]  # 12 > window 4


def load_hf(path, dtype, **kw):
    return load_hf_model(path, dtype, **kw).eval()  # MXFP4 dequantized at load, as the conformance adapter does


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = write_tiny(tmp_path_factory.mktemp("hf") / "tiny", seed=3, layout="hf")
    return path, Model(path).logits(TOKENS)


def test_hf_float32_matches(ckpt):
    path, want = ckpt
    hf = load_hf(path, torch.float32)
    with torch.no_grad():
        got = hf(torch.tensor([TOKENS])).logits[0].double().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    # HF's YaRN, computed its own way in float32, against the reference's float64 frequencies
    rope = hf.model.rotary_emb
    inv_ref, conc_ref = Model(path).inv_freq, Model(path).concentration
    np.testing.assert_allclose(rope.inv_freq.double().numpy(), inv_ref, rtol=1e-6)
    assert rope.attention_scaling == pytest.approx(conc_ref, rel=1e-12)


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated")  # transformers 5.x renames it `cache`
def test_hf_float64_matches_including_sliding_cache_decode(ckpt):
    path, want = ckpt
    hf = load_hf(path, torch.float64, experts_implementation="eager")  # grouped_mm has no float64
    c = TINY
    conc, inv = gpt_oss_torch_formula(c.head_dim, c.rope_theta, c.rope_scaling_factor, c.initial_context_length,
                                      c.rope_ntk_alpha, c.rope_ntk_beta)
    inv = torch.from_numpy(inv)

    def rope64(x, position_ids):  # HF's forward, in float64
        angles = position_ids[..., None].double() * inv
        return angles.cos() * conc, angles.sin() * conc

    def norm64(h, m):  # HF's GptOssRMSNorm without its cast to float32 (its own weight and eps)
        return m.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))

    hf.model.rotary_emb.forward = rope64
    norms = [m for m in hf.modules() if type(m).__name__ == "GptOssRMSNorm"]
    assert len(norms) == 2 * TINY.num_hidden_layers + 1
    for m in norms:
        assert m.variance_epsilon == 1e-5
        m.forward = lambda h, m=m: norm64(h, m)
    with torch.no_grad():
        full = hf(torch.tensor([TOKENS])).logits[0].numpy()
        np.testing.assert_allclose(full, want, rtol=0, atol=1e-10)  # measured 3e-15
        out = hf(torch.tensor([TOKENS[:3]]), use_cache=True)  # prefill 3, then decode one at a time past the window
        steps, past = [out.logits[0]], out.past_key_values
        for t in TOKENS[3:]:
            out = hf(torch.tensor([[t]]), past_key_values=past, use_cache=True)
            steps.append(out.logits[0])
            past = out.past_key_values
    np.testing.assert_allclose(torch.cat(steps).numpy(), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("source", ["dequantized", "random"])
def test_hf_dense_experts_match(tmp_path, ckpt, source):
    """A checkpoint with dense experts (gate_up_proj (E, C, 2I), down_proj (E, I, C): how transformers saves a
    dequantized or fine-tuned gpt-oss), loaded by transformers as it is: the reference reads the same model. The
    dequantized twin of the MXFP4 checkpoint is the MXFP4 model exactly (bitwise equal reference logits); random
    dense weights (off the MXFP4 grid) check the transposition both ways. Same float32 bound as above."""
    from reference.writer import write_checkpoint, write_dequantized
    path, mxfp4_logits = ckpt
    if source == "dequantized":
        dense = write_dequantized(path, tmp_path / "dense")
    else:
        dense = write_checkpoint(tmp_path / "dense", TINY, seed=5, layout="hf", experts="dense")
    want = Model(dense).logits(TOKENS)
    if source == "dequantized":
        assert np.array_equal(want, mxfp4_logits)
    hf = load_hf(dense, torch.float32)
    assert hf.model.layers[0].mlp.experts.gate_up_proj.shape == (TINY.num_experts, TINY.hidden_size,
                                                                 2 * TINY.intermediate_size)
    with torch.no_grad():
        got = hf(torch.tensor([TOKENS])).logits[0].double().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_transformers_adapter_reads_hf_folders_as_they_are(tmp_path):
    """conformance/impls/transformers.py handed an HF-layout folder (--layout hf / hf-dense, or a user's own
    checkpoint) loads it in place, no copy; the golden logits hold for the dense form."""
    from conformance.impls.transformers import TransformersImpl
    from golden.derived import checkpoint_dir
    from golden.format import DATA_DIR, load_npz, verify
    name = "tiny"  # swiglu_limit 7 (transformers 5.17 hard-codes 7: gqa2-top2's 3 would fail on that, not on this)
    folder = checkpoint_dir(DATA_DIR, verify(DATA_DIR), "hf-dense", name)
    impl = TransformersImpl(str(folder))
    case = load_npz(DATA_DIR / "cases" / f"{name}.npz")
    got = impl.logits(case["tokens"].tolist())
    np.testing.assert_allclose(got, case["logits"], rtol=0, atol=2e-5)
    assert impl.model.model.layers[0].mlp.experts.gate_up_proj.dtype == torch.float32


def test_a_checkpoint_transformers_saved_after_dequantizing(tmp_path, ckpt):
    """What a fine-tune starts from: the MXFP4 checkpoint loaded with Mxfp4Config(dequantize=True) and written back
    by transformers' own save_pretrained (its config keys, tensor names, dtypes and orientation, whatever this
    transformers version writes). The reference reads it as dense experts and as the same model: bitwise equal
    float64 logits (every dequantized value is exact in bf16)."""
    from reference import tensorfile
    from reference.checkpoint import Checkpoint
    from reference.tensorfile import CheckpointError
    path, want = ckpt
    load_hf(path, torch.bfloat16).save_pretrained(tmp_path / "saved")
    names = {n for f in (tmp_path / "saved").glob("*.safetensors") for n in tensorfile.read_header(f)}
    if "model.layers.0.mlp.experts.gate_up_proj" not in names:  # transformers 5.17 drops them (seen in the image)
        assert "model.layers.0.mlp.experts.gate_up_proj_bias" in names and tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 25)
        with pytest.raises(CheckpointError, match="experts' weights are missing, only their biases"):
            Checkpoint(tmp_path / "saved")
        return
    ck = Checkpoint(tmp_path / "saved")
    assert (ck.layout, ck.experts) == ("hf", "dense")
    assert np.array_equal(Model(ck).logits(TOKENS), want)
