"""Writing synthetic gpt-oss checkpoints: random weights, real format, either layout, any config.

What this is: the source of every test and golden checkpoint in this kit, and of the real-shape checkpoints
used for memory and speed work. Files are written exactly as OpenAI's release writes them: `config.json`
with only the release's keys, safetensors with the release's tensor names and dtypes (BF16; MXFP4 experts as
U8 blocks and U8 scales). The HF layout is the same model under HF names (qkv split into q/k/v).
Weights are drawn so that activations stay O(1) through the layers (fan-in scaled), and are deterministic in
(seed, tensor name), whatever order they are written in. Large tensors are produced one at a time.

Not here: trained weights (none exist here) or any claim that these weights produce language.
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from reference import mxfp4, tensorfile
from reference.checkpoint import Checkpoint, expected_tensors, hf_name, hf_qkv_names, hf_transposed
from reference.config import Config


def _rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def random_tensor(config: Config, name: str, shape, kind: str, seed: int, float_dtype: str = "BF16") -> np.ndarray:
    """The stored values of one tensor (bf16 as uint16 bits, U8 as uint8)."""
    rng = _rng(seed, name)
    C = config.hidden_size
    if kind == "u8" and name.endswith(".blocks"):
        return rng.integers(0, 256, size=shape, dtype=np.uint8)  # every FP4 code equally likely
    if kind == "u8":  # E8M0 scales: FP4 values have RMS ~2.9, so aim at 1/(2.9*sqrt(fan_in)) with jitter
        fan_in = shape[-1] * mxfp4.BLOCK
        base = 127 + math.floor(math.log2(1.0 / (2.9 * math.sqrt(fan_in))))
        return (base + rng.integers(0, 2, size=shape)).astype(np.uint8)
    leaf = name.split(".", 2)[-1] if name.startswith("block.") else name
    std = {"embedding.weight": 1.0, "unembedding.weight": 1.0 / math.sqrt(C),
           "attn.qkv.weight": 1.0 / math.sqrt(C), "attn.out.weight": 1.0 / math.sqrt(shape[-1]),
           "mlp.gate.weight": 1.0 / math.sqrt(C), "attn.sinks": 1.0,
           "mlp.mlp1_weight": 1.0 / math.sqrt(shape[-1]), "mlp.mlp2_weight": 1.0 / math.sqrt(shape[-1])}.get(leaf, 0.1)
    x = rng.standard_normal(size=shape, dtype=np.float32) * np.float32(std)
    if leaf.endswith("norm.scale") or leaf == "norm.scale":
        x += np.float32(1.0)
    if float_dtype == "BF16":
        return (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bf16: the stored value is exact
    return x.astype(tensorfile.DTYPES[float_dtype][0])


def hf_config_json(c: Config, experts: str = "mxfp4") -> dict:
    """config.json as transformers writes it; a dense checkpoint has no quantization_config (transformers drops it
    when it saves a dequantized model)."""
    cfg = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": True,
            "attention_dropout": 0.0,
            # the release's <|return|> and <|endoftext|>; null where a tiny vocabulary lacks them
            "eos_token_id": 200002 if c.vocab_size > 200002 else None,
            "pad_token_id": 199999 if c.vocab_size > 199999 else None,
            "experts_per_token": c.experts_per_token, "num_experts_per_tok": c.experts_per_token,
            "head_dim": c.head_dim, "hidden_act": "silu", "hidden_size": c.hidden_size,
            "initial_context_length": c.initial_context_length, "initializer_range": 0.02,
            "intermediate_size": c.intermediate_size,
            "layer_types": ["sliding_attention" if n % 2 == 0 else "full_attention"
                            for n in range(c.num_hidden_layers)],
            "max_position_embeddings": 131072, "num_attention_heads": c.num_attention_heads,
            "num_hidden_layers": c.num_hidden_layers, "num_key_value_heads": c.num_key_value_heads,
            "num_local_experts": c.num_experts, "output_router_logits": False,
            "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
                "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
            "rms_norm_eps": 1e-05, "rope_scaling": {
                "beta_fast": float(c.rope_ntk_beta), "beta_slow": float(c.rope_ntk_alpha),
                "factor": float(c.rope_scaling_factor), "original_max_position_embeddings": c.initial_context_length,
                "rope_type": "yarn", "truncate": False},
            "rope_theta": c.rope_theta, "router_aux_loss_coef": 0.9, "sliding_window": c.sliding_window,
            "swiglu_limit": c.swiglu_limit, "tie_word_embeddings": False, "use_cache": True,
            "vocab_size": c.vocab_size}
    if experts == "dense":
        del cfg["quantization_config"]
    return cfg


def write_checkpoint(path, config: Config, seed: int = 0, layout: str = "original", shards: int = 1,
                     float_dtype: str = "BF16", overrides: dict | None = None, experts: str = "mxfp4") -> Path:
    """Write a checkpoint folder. overrides: {canonical name: stored array} replaces random values
    (e.g. to plant a routing margin); their dtype must be the stored one (uint16 bits for BF16), their shape the
    canonical one. experts="dense" (HF layout only): plain float experts, as a bf16 fine-tune is saved by
    transformers (random, not on the MXFP4 grid; see write_dequantized for an MXFP4 checkpoint's dense twin)."""
    assert layout in ("original", "hf") and shards >= 1
    assert experts == "mxfp4" or layout == "hf", "dense experts exist in the HF layout only"
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    expected = expected_tensors(config, experts)
    overrides = overrides or {}
    unknown = set(overrides) - set(expected)
    assert not unknown, f"overrides name unknown tensors {sorted(unknown)}"

    def stored(name):
        shape, kind = expected[name]
        return overrides[name] if name in overrides else random_tensor(config, name, shape, kind, seed, float_dtype)

    # file name -> {stored name: (dtype, shape, producer)}
    specs: dict[str, tuple] = {}
    for name, (shape, kind) in expected.items():
        dtype = "U8" if kind == "u8" else float_dtype
        if layout == "original":
            specs[name] = (dtype, shape, lambda name=name: stored(name))
        elif name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            c, layer = config, int(name.split(".")[1])
            q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
            bounds = [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]
            for src, (a, b) in zip(hf_qkv_names(layer, name.rsplit(".", 1)[1]), bounds):
                specs[src] = (dtype, (b - a, *shape[1:]), lambda name=name, a=a, b=b: stored(name)[a:b])
        elif hf_transposed(name):  # HF keeps dense experts as x @ W: (E, C, 2I) and (E, I, C)
            specs[hf_name(name)] = (dtype, (shape[0], shape[2], shape[1]),
                                    lambda name=name: np.ascontiguousarray(stored(name).swapaxes(1, 2)))
        else:
            specs[hf_name(name)] = (dtype, shape, lambda name=name: stored(name))
    names = sorted(specs)
    files = {}
    for i in range(shards):
        part = names[i * len(names) // shards:(i + 1) * len(names) // shards]
        fname = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensorfile.write_streaming(path / fname, {n: specs[n][:2] for n in part}, lambda n: specs[n][2](),
                                   metadata={"format": "pt"})
        files.update({n: fname for n in part})
    cfg = config.to_json() if layout == "original" else hf_config_json(config, experts)
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if layout == "hf" and shards > 1:
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": files}, indent=2))
    return path


def write_hf(src, dst, dense: bool = False, float_dtype: str = "BF16") -> Path:
    """An HF-layout copy of a checkpoint with MXFP4 experts (either layout): every stored tensor byte-identical
    under its HF name (q/k/v split), config.json as transformers writes it. dense=True: its dense twin instead,
    the experts decoded into gate_up_proj / down_proj (exact in BF16: a FP4 value times a power of two, for the
    scales a trained or synthetic checkpoint holds), no quantization_config: the same model, what transformers
    saves after loading it with Mxfp4Config(dequantize=True)."""
    ck = Checkpoint(src)
    if ck.experts != "mxfp4":
        raise ValueError(f"{src}: its experts are already {ck.experts}")
    c, dst, experts = ck.config, Path(dst), "dense" if dense else "mxfp4"
    dst.mkdir(parents=True, exist_ok=True)
    specs, produce = {}, {}

    def copy(src_name, dst_name, rows=None):
        e = ck.entries[src_name]
        shape = e.shape if rows is None else (rows[1] - rows[0], *e.shape[1:])
        specs[dst_name] = (e.dtype, shape)
        produce[dst_name] = lambda: np.asarray(e.memmap() if rows is None else e.memmap()[rows[0]:rows[1]])

    for name, (shape, kind) in expected_tensors(c, experts).items():
        if hf_transposed(name):
            specs[hf_name(name)] = (float_dtype, (shape[0], shape[2], shape[1]))
            produce[hf_name(name)] = lambda name=name: _dense_expert(ck, name, float_dtype)
        elif ck.layout == "hf":  # already HF names, q/k/v already split
            for s in ck._sources(name):
                copy(s, s)
        elif name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
            for h, rows in zip(hf_qkv_names(int(name.split(".")[1]), name.rsplit(".", 1)[1]),
                               [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]):
                copy(name, h, rows)
        else:
            copy(name, hf_name(name))
    tensorfile.write_streaming(dst / "model.safetensors", specs, lambda n: produce[n](), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(hf_config_json(c, experts), indent=2) + "\n")
    return dst


def write_dequantized(src, dst, float_dtype: str = "BF16") -> Path:
    """The dense twin of a checkpoint with MXFP4 experts: write_hf(src, dst, dense=True)."""
    return write_hf(src, dst, dense=True, float_dtype=float_dtype)


def _dense_expert(ck, name: str, float_dtype: str) -> np.ndarray:
    """All experts of one packed matrix decoded, transposed to HF's (E, in, out), stored as float_dtype; filled
    an expert at a time (120b's gate_up is 4.2 GB in bf16, 17 GB in float64)."""
    layer, which = int(name.split(".")[1]), 0 if name.endswith("mlp1_weight") else 2
    out = None
    for e in range(ck.config.num_experts):
        W = ck.expert(layer, e)[which].T  # (in, out)
        if float_dtype == "BF16":
            if not np.all(np.abs(W) <= BF16_MAX):
                raise ValueError(f"{ck.path}: {name} expert {e} holds values beyond bf16's range (an E8M0 scale "
                                 f"near 2^127); write float_dtype='F32'")
            stored = tensorfile.f64_to_bf16_bits(W)
            assert np.array_equal(tensorfile.bf16_bits_to_f32(stored), W), "an FP4 value times 2^k is a bf16"
        else:
            stored = W.astype(tensorfile.DTYPES[float_dtype][0])
        if out is None:
            out = np.empty((ck.config.num_experts, *stored.shape), dtype=stored.dtype)
        out[e] = stored
    return out


BF16_MAX = float(np.float32(3.3895313892515355e38))  # (2 - 2^-7) * 2^127
