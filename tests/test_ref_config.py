"""reference/config.py: presets equal the released config.json values, strict from_json (missing and unknown
keys named), to_json round trip, value checks, and the HF config.json mapping (checkpoint.config_from_hf_json)."""
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.checkpoint import config_from_hf_json
from reference.config import GPT_OSS_20B, GPT_OSS_120B, PRESETS, Config, ConfigError
from reference.writer import hf_config_json

from helpers import TINY, tiny_config

# original/config.json of openai/gpt-oss-20b as released (the 120b differs in depth and expert count)
RELEASED_20B = {"num_hidden_layers": 24, "num_experts": 32, "experts_per_token": 4, "vocab_size": 201088,
                "hidden_size": 2880, "intermediate_size": 2880, "swiglu_limit": 7.0, "head_dim": 64,
                "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
                "initial_context_length": 4096, "rope_theta": 150000, "rope_scaling_factor": 32.0,
                "rope_ntk_alpha": 1.0, "rope_ntk_beta": 32.0}
RELEASED_120B = RELEASED_20B | {"num_hidden_layers": 36, "num_experts": 128}


@pytest.mark.parametrize("preset,released", [(GPT_OSS_20B, RELEASED_20B), (GPT_OSS_120B, RELEASED_120B)])
def test_presets_are_the_released_configs(preset, released):
    assert preset.to_json() == released  # 150000 == 150000.0
    assert Config.from_json(json.loads(json.dumps(released))) == preset
    assert preset.q_per_kv == 8 and preset.qkv_dim == 64 * (64 + 2 * 8) == 5120
    assert PRESETS[{24: "gpt-oss-20b", 36: "gpt-oss-120b"}[preset.num_hidden_layers]] is preset


@pytest.mark.parametrize("key", sorted(RELEASED_20B))
def test_missing_key_is_named(key):
    d = dict(RELEASED_20B)
    del d[key]
    with pytest.raises(ConfigError, match=f"missing keys: \\['{key}'\\]"):
        Config.from_json(d)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown keys: \\['rope_sclaing_factor'\\]"):
        Config.from_json(RELEASED_20B | {"rope_sclaing_factor": 32.0})
    with pytest.raises(ConfigError, match="JSON object"):
        Config.from_json([RELEASED_20B])


@pytest.mark.parametrize("key,value,words", [
    ("num_experts", 2.5, "num_experts"), ("vocab_size", True, "vocab_size"), ("swiglu_limit", "7", "swiglu_limit"),
    ("rope_theta", float("nan"), "rope_theta"), ("head_dim", 0, "head_dim"), ("num_key_value_heads", 3, "multiple"),
    ("experts_per_token", 5, "experts_per_token=5"), ("head_dim", 15, "even"), ("hidden_size", 48, "hidden_size=48"),
    ("intermediate_size", 40, "intermediate_size=40"), ("rope_scaling_factor", 0.5, "rope_scaling_factor"),
    ("rope_ntk_beta", 0.5, "YaRN ramp bounds"),
])
def test_bad_values_are_named(key, value, words):
    with pytest.raises(ConfigError, match=words):
        Config.from_json(TINY.to_json() | {key: value})


@settings(max_examples=30)
@given(layers=st.integers(1, 50), experts=st.integers(1, 64), data=st.data())
def test_to_json_round_trip(layers, experts, data):
    c = tiny_config(num_hidden_layers=layers, num_experts=experts,
                    experts_per_token=data.draw(st.integers(1, experts)),
                    hidden_size=32 * data.draw(st.integers(1, 8)), sliding_window=data.draw(st.integers(1, 1000)),
                    swiglu_limit=data.draw(st.floats(0.1, 100.0)))
    back = Config.from_json(json.loads(json.dumps(c.to_json())))
    assert back == c and [f.name for f in dataclasses.fields(back)] == list(c.to_json())


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.hidden_size = 128


@pytest.mark.parametrize("config", [GPT_OSS_20B, GPT_OSS_120B, TINY], ids=["20b", "120b", "tiny"])
def test_hf_config_maps_back_to_the_same_model(config):
    assert config_from_hf_json(json.loads(json.dumps(hf_config_json(config)))) == config
    # transformers >= 5.2x writes swiglu_alpha (gpt-oss's constant) into the configs it saves
    assert config_from_hf_json(hf_config_json(config) | {"swiglu_alpha": 1.702}) == config
    # ... and keeps rope_theta inside rope_parameters only
    v5 = hf_config_json(config)
    v5["rope_parameters"] = v5.pop("rope_scaling") | {"rope_theta": v5.pop("rope_theta")}
    assert config_from_hf_json(v5) == config
    del v5["rope_parameters"]["rope_theta"]
    with pytest.raises(ConfigError, match="missing key 'rope_theta'"):
        config_from_hf_json(v5)


@pytest.mark.parametrize("change,words", [
    ({"model_type": "llama"}, "model_type"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 32.0}}, "YaRN"),
    ({"rms_norm_eps": 1e-6}, "rms_norm_eps"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"swiglu_alpha": 1.0}, "swiglu_alpha=1.0; gpt-oss has 1.702"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ({"surprise": 1}, "unknown keys: \\['surprise'\\]"),
    ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config"),
])
def test_hf_config_refuses_a_different_model(change, words):
    d = hf_config_json(TINY) | change
    with pytest.raises(ConfigError, match=words):
        config_from_hf_json(d)


def test_hf_config_truncate_and_missing_key():
    d = hf_config_json(TINY)
    d["rope_scaling"] = d["rope_scaling"] | {"truncate": True}
    with pytest.raises(ConfigError, match="truncate"):
        config_from_hf_json(d)
    d = hf_config_json(TINY)
    del d["num_local_experts"]
    with pytest.raises(ConfigError, match="num_local_experts"):
        config_from_hf_json(d)
