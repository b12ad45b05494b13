"""The gpt-oss model configuration: one frozen dataclass whose fields are the original `config.json` keys.

Source: openai/gpt-oss `gpt_oss/torch/model.py` (ModelConfig) and the released `original/config.json` of
gpt-oss-20b and gpt-oss-120b (model card, arXiv:2508.10925). Hugging Face's `config.json` for the same
model names some keys differently; `from_hf_json` maps them and refuses anything that would change the math.

Not here: anything a port chooses (dtype, device, cache size). Constants of the model that are not in
config.json are named in the file that uses them (RMSNorm eps in norm.py, SwiGLU alpha in moe.py).
"""
import dataclasses
import math
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config.json that is missing keys, has unknown keys, or values the model cannot have."""


@dataclass(frozen=True)
class Config:
    num_hidden_layers: int
    num_experts: int
    experts_per_token: int
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    swiglu_limit: float
    head_dim: int
    num_attention_heads: int
    num_key_value_heads: int
    sliding_window: int
    initial_context_length: int
    rope_theta: float
    rope_scaling_factor: float
    rope_ntk_alpha: float
    rope_ntk_beta: float

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = (int,) if f.type is int else (int, float)
            if isinstance(v, bool) or not isinstance(v, want):
                raise ConfigError(f"config key {f.name!r}: expected {f.type.__name__}, got {v!r}")
            if f.type is float and not math.isfinite(v):
                raise ConfigError(f"config key {f.name!r}: not finite: {v!r}")
        positive = ["num_hidden_layers", "num_experts", "experts_per_token", "vocab_size", "hidden_size",
                    "intermediate_size", "head_dim", "num_attention_heads", "num_key_value_heads",
                    "sliding_window", "initial_context_length", "rope_theta", "rope_scaling_factor",
                    "swiglu_limit", "rope_ntk_alpha", "rope_ntk_beta"]
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"config key {key!r} must be > 0, got {getattr(self, key)!r}")
        if self.experts_per_token > self.num_experts:
            raise ConfigError(f"experts_per_token={self.experts_per_token} > num_experts={self.num_experts}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even (RoPE rotates halves)")
        for key in ("hidden_size", "intermediate_size"):  # MXFP4 blocks hold 32 values along these axes
            if getattr(self, key) % 32:
                raise ConfigError(f"{key}={getattr(self, key)} must be a multiple of 32 (MXFP4 block size)")
        if self.rope_scaling_factor < 1.0:
            raise ConfigError(f"rope_scaling_factor={self.rope_scaling_factor} < 1 (YaRN only stretches)")
        if self.rope_scaling_factor > 1.0:
            from reference.rope import yarn_ramp_bounds
            low, high = yarn_ramp_bounds(self.head_dim, self.rope_theta, self.initial_context_length,
                                         self.rope_ntk_alpha, self.rope_ntk_beta)
            # gpt-oss asserts exactly this (gpt_oss/torch/model.py); outside it the ramp is not a ramp
            if not 0 < low < high < self.head_dim / 2 - 1:
                raise ConfigError(f"YaRN ramp bounds low={low:.4f}, high={high:.4f} violate "
                                  f"0 < low < high < head_dim/2 - 1 = {self.head_dim / 2 - 1}")

    # derived sizes
    @property
    def q_per_kv(self) -> int:  # G: query heads sharing one key/value head
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def qkv_dim(self) -> int:
        return self.head_dim * (self.num_attention_heads + 2 * self.num_key_value_heads)

    def window_of_layer(self, layer: int) -> int | None:
        """Sliding window of a layer: even layers (0, 2, ...) only; odd layers attend to everything."""
        return self.sliding_window if layer % 2 == 0 else None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        """From an original-layout config.json: exactly the known keys, no more, no fewer."""
        if not isinstance(d, dict):
            raise ConfigError(f"config.json must be a JSON object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k not in d]
        unknown = sorted(k for k in d if k not in names)
        if missing:
            raise ConfigError(f"config.json is missing keys: {missing}")
        if unknown:
            raise ConfigError(f"config.json has unknown keys: {unknown} (an original-layout config has exactly {names})")
        return cls(**{k: float(d[k]) if cls.__dataclass_fields__[k].type is float and isinstance(d[k], int)
                      and not isinstance(d[k], bool) else d[k] for k in names})


# The released models (original/config.json of each; identical except depth and expert count).
_COMMON = dict(experts_per_token=4, vocab_size=201088, hidden_size=2880, intermediate_size=2880,
               swiglu_limit=7.0, head_dim=64, num_attention_heads=64, num_key_value_heads=8,
               sliding_window=128, initial_context_length=4096, rope_theta=150000.0,
               rope_scaling_factor=32.0, rope_ntk_alpha=1.0, rope_ntk_beta=32.0)
GPT_OSS_20B = Config(num_hidden_layers=24, num_experts=32, **_COMMON)
GPT_OSS_120B = Config(num_hidden_layers=36, num_experts=128, **_COMMON)
PRESETS = {"gpt-oss-20b": GPT_OSS_20B, "gpt-oss-120b": GPT_OSS_120B}
