"""Reading a gpt-oss checkpoint folder, in OpenAI's original layout or Hugging Face's, lazily and strictly.

Source: the released checkpoints (`original/` and the HF root of openai/gpt-oss-20b and -120b), openai/gpt-oss
gpt_oss/torch/weights.py, and HF transformers' convert_gpt_oss_weights_to_hf.py (the name mapping).

  original: config.json (exactly Config's keys) + *.safetensors named embedding.weight, block.N.attn.*,
            block.N.mlp.*, norm.scale, unembedding.weight
  HF:       config.json (model_type gpt_oss) + *.safetensors named model.embed_tokens.weight,
            model.layers.N.{input_layernorm,self_attn.{q,k,v,o}_proj,self_attn.sinks,post_attention_layernorm,
            mlp.router,mlp.experts.{gate_up,down}_proj_{blocks,scales,bias}}, model.norm.weight, lm_head.weight
  HF dense: the same with the experts as plain float matrices, mlp.experts.gate_up_proj (E, C, 2I) and
            mlp.experts.down_proj (E, I, C) instead of _blocks/_scales: what transformers writes when it saves
            a gpt-oss loaded with Mxfp4Config(dequantize=True), as bf16 fine-tunes are saved. Transposed against
            the original layout (HF multiplies x @ W); gate_up's columns interleave gate and linear as mlp1's rows.
The layout and the expert format ("mxfp4" or "dense") are detected from the tensor names. Every tensor the config
implies must be present with its exact shape and a compatible dtype, and nothing else may be: a mismatch raises
CheckpointError naming it. Tensors stay on disk (memory-mapped per access) and are widened to float64 only when
read. Not here: any math. Callers use canonical (original-layout) names.
"""
import json
from pathlib import Path

import numpy as np

from reference import mxfp4, tensorfile
from reference.config import Config, ConfigError
from reference.moe import SWIGLU_ALPHA
from reference.tensorfile import FLOAT_DTYPES, CheckpointError


EXPERT_FORMATS = ("mxfp4", "dense")


def expected_tensors(c: Config, experts: str = "mxfp4") -> dict[str, tuple[tuple[int, ...], str]]:
    """Canonical name -> (shape, 'float' | 'u8') for every tensor of a model with config c. experts="dense":
    mlp1_weight (E, 2I, C) and mlp2_weight (E, C, I) as floats (gpt_oss.torch's MLPBlock parameters) instead of
    the packed .blocks/.scales."""
    assert experts in EXPERT_FORMATS, experts
    C, V, E, I, H, K, D = (c.hidden_size, c.vocab_size, c.num_experts, c.intermediate_size,
                           c.num_attention_heads, c.num_key_value_heads, c.head_dim)
    out = {"embedding.weight": ((V, C), "float"), "norm.scale": ((C,), "float"),
           "unembedding.weight": ((V, C), "float")}
    for n in range(c.num_hidden_layers):
        a, m = f"block.{n}.attn.", f"block.{n}.mlp."
        out |= {a + "norm.scale": ((C,), "float"), a + "qkv.weight": ((c.qkv_dim, C), "float"),
                a + "qkv.bias": ((c.qkv_dim,), "float"), a + "sinks": ((H,), "float"),
                a + "out.weight": ((C, H * D), "float"), a + "out.bias": ((C,), "float"),
                m + "norm.scale": ((C,), "float"), m + "gate.weight": ((E, C), "float"),
                m + "gate.bias": ((E,), "float"),
                m + "mlp1_weight.blocks": ((E, 2 * I, C // 32, 16), "u8"),
                m + "mlp1_weight.scales": ((E, 2 * I, C // 32), "u8"), m + "mlp1_bias": ((E, 2 * I), "float"),
                m + "mlp2_weight.blocks": ((E, C, I // 32, 16), "u8"),
                m + "mlp2_weight.scales": ((E, C, I // 32), "u8"), m + "mlp2_bias": ((E, C), "float")}
        if experts == "dense":
            for w, shape in (("mlp1_weight", (E, 2 * I, C)), ("mlp2_weight", (E, C, I))):
                del out[m + w + ".blocks"], out[m + w + ".scales"]
                out[m + w] = (shape, "float")
    return out


def hf_name(name: str) -> str:
    """Canonical name -> HF name (qkv is split in HF; see HF_QKV)."""
    fixed = {"embedding.weight": "model.embed_tokens.weight", "norm.scale": "model.norm.weight",
             "unembedding.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    _, n, rest = name.split(".", 2)
    L = f"model.layers.{n}."
    return L + {"attn.norm.scale": "input_layernorm.weight", "attn.sinks": "self_attn.sinks",
                "attn.out.weight": "self_attn.o_proj.weight", "attn.out.bias": "self_attn.o_proj.bias",
                "mlp.norm.scale": "post_attention_layernorm.weight", "mlp.gate.weight": "mlp.router.weight",
                "mlp.gate.bias": "mlp.router.bias", "mlp.mlp1_weight.blocks": "mlp.experts.gate_up_proj_blocks",
                "mlp.mlp1_weight.scales": "mlp.experts.gate_up_proj_scales",
                "mlp.mlp1_bias": "mlp.experts.gate_up_proj_bias",
                "mlp.mlp2_weight.blocks": "mlp.experts.down_proj_blocks",
                "mlp.mlp2_weight.scales": "mlp.experts.down_proj_scales",
                "mlp.mlp2_bias": "mlp.experts.down_proj_bias", "mlp.mlp1_weight": "mlp.experts.gate_up_proj",
                "mlp.mlp2_weight": "mlp.experts.down_proj"}[rest]


def hf_transposed(name: str) -> bool:
    """Dense experts are stored transposed in the HF layout: mlp1_weight (E, 2I, C) as gate_up_proj (E, C, 2I),
    mlp2_weight (E, C, I) as down_proj (E, I, C)."""
    return name.endswith(("mlp.mlp1_weight", "mlp.mlp2_weight"))


def hf_qkv_names(layer: int, what: str) -> list[str]:
    return [f"model.layers.{layer}.self_attn.{p}_proj.{what}" for p in "qkv"]


# HF config keys that carry no math (bookkeeping), accepted and ignored.
_HF_IGNORED = {"architectures", "torch_dtype", "dtype", "transformers_version", "use_cache", "initializer_range",
               "attention_dropout", "router_aux_loss_coef", "output_router_logits", "max_position_embeddings",
               "pad_token_id", "eos_token_id", "bos_token_id", "_name_or_path", "quantization_config",
               "hidden_act", "model_type", "rope_scaling", "rope_parameters", "layer_types", "attention_bias",
               "rms_norm_eps", "tie_word_embeddings", "num_local_experts", "num_experts_per_tok",
               "experts_per_token", "initial_context_length", "swiglu_alpha"}
_HF_SAME = ["num_hidden_layers", "vocab_size", "hidden_size", "intermediate_size", "swiglu_limit", "head_dim",
            "num_attention_heads", "num_key_value_heads", "sliding_window", "rope_theta"]


def config_from_hf_json(d: dict) -> Config:
    """Map an HF gpt_oss config.json to Config; refuse values that would make it a different model."""
    def need(key, source=d):
        if key not in source:
            raise ConfigError(f"HF config.json is missing key {key!r}")
        return source[key]

    if d.get("model_type") != "gpt_oss":
        raise ConfigError(f"HF config.json model_type is {d.get('model_type')!r}, expected 'gpt_oss'")
    unknown = sorted(set(d) - _HF_IGNORED - set(_HF_SAME))
    if unknown:
        raise ConfigError(f"HF config.json has unknown keys: {unknown}")
    rope = d.get("rope_scaling") or d.get("rope_parameters")
    if not isinstance(rope, dict) or rope.get("rope_type", rope.get("type")) != "yarn":
        raise ConfigError(f"HF config.json rope scaling must be YaRN, got {rope!r}")
    if rope.get("truncate", False):
        raise ConfigError("HF config.json rope_scaling.truncate=true rounds the YaRN ramp bounds; gpt-oss does not")
    # swiglu_alpha: written by transformers >= 5.2x (GptOssConfig); gpt-oss's is the constant 1.702 (moe.py)
    checks = {"attention_bias": True, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "swiglu_alpha": SWIGLU_ALPHA}
    for key, want in checks.items():
        if key in d and d[key] != want:
            raise ConfigError(f"HF config.json {key}={d[key]!r}; gpt-oss has {want!r}")
    if "quantization_config" in d and (d["quantization_config"] or {}).get("quant_method") != "mxfp4":
        raise ConfigError(f"HF config.json quantization_config {d['quantization_config']!r}: only mxfp4 is read")
    fields = {k: need(k) for k in _HF_SAME if k != "rope_theta"}
    # transformers >= 5 writes rope_theta inside rope_parameters only
    fields["rope_theta"] = d["rope_theta"] if "rope_theta" in d else need("rope_theta", rope)
    fields["num_experts"] = need("num_local_experts")
    fields["experts_per_token"] = d.get("num_experts_per_tok", d.get("experts_per_token"))
    if "num_experts_per_tok" in d and "experts_per_token" in d and d["num_experts_per_tok"] != d["experts_per_token"]:
        raise ConfigError("HF config.json num_experts_per_tok and experts_per_token disagree")
    fields["initial_context_length"] = d.get("initial_context_length",
                                             rope.get("original_max_position_embeddings"))
    fields["rope_scaling_factor"] = need("factor", rope)
    fields["rope_ntk_alpha"] = need("beta_slow", rope)  # HF's beta_slow is gpt-oss's ntk_alpha
    fields["rope_ntk_beta"] = need("beta_fast", rope)  # HF's beta_fast is gpt-oss's ntk_beta
    if "rope_theta" in rope and rope["rope_theta"] != fields["rope_theta"]:
        raise ConfigError("HF config.json rope_theta disagrees with rope_parameters.rope_theta")
    config = Config.from_json({k: v for k, v in fields.items() if v is not None})
    if "layer_types" in d:
        want = ["sliding_attention" if n % 2 == 0 else "full_attention" for n in range(config.num_hidden_layers)]
        if d["layer_types"] != want:
            raise ConfigError("HF config.json layer_types must alternate sliding (even layers) and full (odd)")
    return config


class Checkpoint:
    """A checkpoint folder, validated on open; tensors are read on demand."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a checkpoint folder")
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.path}: no *.safetensors files")
        self.entries: dict[str, tensorfile.TensorEntry] = {}
        for f in files:
            for name, entry in tensorfile.read_header(f).items():
                if name in self.entries:
                    raise CheckpointError(f"tensor {name!r} appears in both {self.entries[name].path.name} and {f.name}")
                self.entries[name] = entry
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{self.path}: no config.json")
        try:
            raw = json.loads(config_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{config_path}: not valid JSON ({e})") from None
        if "embedding.weight" in self.entries:
            self.layout, self.config = "original", Config.from_json(raw)
        elif "model.embed_tokens.weight" in self.entries:
            self.layout, self.config = "hf", config_from_hf_json(raw)
        else:
            raise CheckpointError(f"{self.path}: neither embedding.weight (original layout) nor "
                                  f"model.embed_tokens.weight (HF layout) is present")
        self.experts = self._expert_format()
        self._validate()

    def _expert_format(self) -> str:
        dense = sorted(n for n in self.entries if n.endswith((".mlp1_weight", ".mlp2_weight", ".experts.gate_up_proj",
                                                               ".experts.down_proj")))
        packed = sorted(n for n in self.entries if n.endswith(("_blocks", "_scales", ".blocks", ".scales")))
        if not dense:
            if not packed and any(n.endswith((".gate_up_proj_bias", ".mlp1_bias")) for n in self.entries):
                raise CheckpointError(f"{self.path}: the experts' weights are missing, only their biases are here: "
                                      f"neither MXFP4 blocks/scales nor dense gate_up_proj/down_proj (transformers "
                                      f"5.17's save_pretrained writes a dequantized gpt-oss without them)")
            return "mxfp4"
        if self.layout == "original":
            raise CheckpointError(f"{self.path}: dense expert tensors {dense[:2]} in the original layout, which holds "
                                  f"MXFP4 experts only (mlp1_weight.blocks/.scales); dense experts are read in the "
                                  f"HF layout (mlp.experts.gate_up_proj, down_proj), as transformers saves them")
        if packed:
            raise CheckpointError(f"{self.path}: experts both dense ({dense[0]!r}) and MXFP4 ({packed[0]!r}); "
                                  f"a checkpoint holds one format")
        return "dense"

    def _sources(self, name: str) -> list[str]:
        if self.layout == "original":
            return [name]
        if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            return hf_qkv_names(int(name.split(".")[1]), name.rsplit(".", 1)[1])
        return [hf_name(name)]

    def _validate(self):
        c = self.config
        seen = set()
        for name, (shape, kind) in expected_tensors(c, self.experts).items():
            srcs = self._sources(name)
            if len(srcs) == 3:  # HF's q/k/v: rows H*D, K*D, K*D
                rows = [c.num_attention_heads * c.head_dim] + [c.num_key_value_heads * c.head_dim] * 2
                shapes = [(r, *shape[1:]) for r in rows]
            elif self.layout == "hf" and hf_transposed(name):
                shapes = [(shape[0], shape[2], shape[1])]
            else:
                shapes = [shape]
            for src, want in zip(srcs, shapes):
                e = self.entries.get(src)
                if e is None:
                    raise CheckpointError(f"{self.path}: missing tensor {src!r} (expected shape {list(want)})")
                if e.shape != want:
                    raise CheckpointError(f"{e.path.name}: tensor {src!r} has shape {list(e.shape)}, "
                                          f"config implies {list(want)}")
                ok = e.dtype in FLOAT_DTYPES if kind == "float" else e.dtype == "U8"
                if not ok:
                    raise CheckpointError(f"{e.path.name}: tensor {src!r} has dtype {e.dtype}, expected "
                                          f"{'a float dtype (BF16 as released)' if kind == 'float' else 'U8'}")
                seen.add(src)
        extra = sorted(set(self.entries) - seen)
        if extra:
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            raise CheckpointError(f"{self.path}: unexpected tensors {extra[:5]}{more} for this config")

    # -- reading -------------------------------------------------------------------------------------
    def _f64(self, src: str, index=None) -> np.ndarray:
        e = self.entries[src]
        values = e.memmap() if index is None else e.memmap()[index]
        x = tensorfile.to_f64(e, values)
        if not np.all(np.isfinite(x)):
            raise CheckpointError(f"{e.path.name}: tensor {src!r} holds non-finite values")
        return x

    def get(self, name: str) -> np.ndarray:
        """A whole float tensor by canonical name, as float64."""
        srcs = self._sources(name)
        return np.concatenate([self._f64(s) for s in srcs], axis=0) if len(srcs) > 1 else self._f64(srcs[0])

    def rows(self, name: str, index) -> np.ndarray:
        """Rows of a float tensor (e.g. embedding rows of some tokens), read without touching the rest."""
        (src,) = self._sources(name)
        return self._f64(src, index)

    def layer_weights(self, layer: int, part: str, names) -> dict[str, np.ndarray]:
        return {n: self.get(f"block.{layer}.{part}.{n}") for n in names}

    def expert(self, layer: int, e: int):
        """Expert e of a layer, decoded: W1 (2I, C), b1 (2I,), W2 (C, I), b2 (C,) in float64."""
        m = f"block.{layer}.mlp."

        def dequant(w):
            if self.experts == "dense":  # HF's (C, 2I) and (I, C): transposed to the original's orientation
                return np.ascontiguousarray(self.rows(m + w, e).T)
            blocks, scales = (self.entries[self._sources(m + w + s)[0]] for s in (".blocks", ".scales"))
            sc = np.asarray(scales.memmap()[e])
            if np.any(sc == mxfp4.SCALE_NAN):
                raise CheckpointError(f"{scales.path.name}: {scales.name!r} expert {e} has an E8M0 NaN scale (0xFF)")
            return mxfp4.decode(np.asarray(blocks.memmap()[e]), sc)

        return (dequant("mlp1_weight"), self.rows(m + "mlp1_bias", e),
                dequant("mlp2_weight"), self.rows(m + "mlp2_bias", e))
