"""reference/checkpoint.py and tensorfile.py: both layouts and sharding give identical logits, every stored
dtype widens exactly, and bad input (missing/extra tensors, wrong shapes or dtypes, truncated or corrupt files,
bad config.json, a NaN scale in a routed expert, non-finite weights) raises an error naming the culprit."""
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import tensorfile
from reference.checkpoint import Checkpoint, expected_tensors, hf_name
from reference.config import ConfigError
from reference.model import Model
from reference.tensorfile import CheckpointError

from helpers import TINY, read_raw, tiny_config, write_raw, write_tiny

TOKENS = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38]  # 10 > sliding_window 4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An original-layout and an HF-layout tiny checkpoint of the same weights, and their logits."""
    root = tmp_path_factory.mktemp("ckpt")
    orig, hf = write_tiny(root / "orig"), write_tiny(root / "hf", layout="hf")
    return {"orig": orig, "hf": hf, "logits": Model(orig).logits(TOKENS)}


def copy(src, tmp_path, name="copy"):
    return shutil.copytree(src, tmp_path / name)


def tensors_of(path):
    """Every tensor of one .safetensors file as {name: (dtype, array copy)}."""
    return {n: (e.dtype, np.array(e.memmap())) for n, e in tensorfile.read_header(path).items()}


def rewrite(path, change):
    """Rewrite one .safetensors file after change(tensors) edits the dict in place."""
    t = tensors_of(path)
    change(t)
    tensorfile.write(path, t)


# -- layouts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,shards", [("original", 1), ("original", 3), ("hf", 1), ("hf", 4)])
def test_layouts_and_shards_give_identical_logits(base, tmp_path, layout, shards):
    path = write_tiny(tmp_path / "c", layout=layout, shards=shards)
    ckpt = Checkpoint(path)
    assert ckpt.layout == layout and ckpt.config == TINY
    assert len(list(path.glob("*.safetensors"))) == shards
    assert np.array_equal(Model(ckpt).logits(TOKENS), base["logits"])  # bit-identical: same stored values


def test_hf_names_split_qkv(base):
    names = set(Checkpoint(base["hf"]).entries)
    assert "model.layers.1.self_attn.q_proj.weight" in names and "model.layers.1.mlp.router.bias" in names
    assert not any("qkv" in n for n in names)
    assert len(names) == len(expected_tensors(TINY)) + 4 * TINY.num_hidden_layers  # qkv w/b -> q,k,v w/b


def test_float_dtypes_widen_exactly(base, tmp_path):
    """The same bf16 values stored as F32, F64 and F16 (all exact here) give bit-identical logits."""
    rows = np.arange(-8, 8, dtype=np.float64) / 4  # exactly representable in every float dtype
    bits = tensorfile.f64_to_bf16_bits(rows)
    assert np.array_equal(tensorfile.bf16_bits_to_f32(bits), rows)
    for dtype in ("F32", "F64"):
        path = copy(base["orig"], tmp_path, dtype)
        np_dtype = tensorfile.DTYPES[dtype][0]
        rewrite(path / "model.safetensors", lambda t: t.update({
            n: (dtype, tensorfile.bf16_bits_to_f32(a).astype(np_dtype))
            for n, (d, a) in list(t.items()) if d == "BF16"}))
        assert np.array_equal(Model(path).logits(TOKENS), base["logits"]), dtype


@settings(max_examples=30)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_bf16_rounding_matches_torch(values):
    x = np.array(values, dtype=np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(tensorfile.f64_to_bf16_bits(x), want)


@settings(max_examples=20)
@given(st.dictionaries(st.text("abc.", min_size=1, max_size=6), st.tuples(
    st.sampled_from(["BF16", "F16", "F32", "F64", "U8"]), st.lists(st.integers(0, 4), max_size=3)), max_size=5),
    st.integers(0, 2**32 - 1))
def test_tensorfile_write_read_round_trip(tmp_path_factory, specs, seed):
    rng = np.random.default_rng(seed)
    tensors = {n: (d, rng.integers(0, 256, size=shape).astype(tensorfile.DTYPES[d][0]))
               for n, (d, shape) in specs.items()}
    path = tmp_path_factory.mktemp("tf") / "x.safetensors"
    tensorfile.write(path, tensors, metadata={"format": "pt"})
    entries = tensorfile.read_header(path)
    assert set(entries) == set(tensors)
    for n, (d, a) in tensors.items():
        assert entries[n].dtype == d and entries[n].shape == a.shape
        assert np.array_equal(entries[n].memmap(), a)


# -- bad checkpoints: tensors ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout,name", [("orig", "block.1.mlp.mlp2_bias"), ("orig", "unembedding.weight"),
                                         ("hf", "model.layers.0.self_attn.k_proj.bias"), ("hf", "model.norm.weight")])
def test_missing_tensor_is_named(base, tmp_path, layout, name):
    path = copy(base[layout], tmp_path)
    rewrite(path / "model.safetensors", lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
        Checkpoint(path)


@pytest.mark.parametrize("layout,name", [("orig", "block.2.attn.sinks"), ("hf", "model.layers.0.self_attn.extra")])
def test_extra_tensor_is_named(base, tmp_path, layout, name):
    path = copy(base[layout], tmp_path)
    rewrite(path / "model.safetensors", lambda t: t.update({name: ("BF16", np.zeros(4, np.uint16))}))
    with pytest.raises(CheckpointError, match=f"unexpected tensors \\['{name}'\\]"):
        Checkpoint(path)


def test_extra_tensor_in_another_shard_and_duplicates(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    tensorfile.write(path / "more.safetensors", {"lm_head.weight": ("BF16", np.zeros((2, 2), np.uint16))})
    with pytest.raises(CheckpointError, match="unexpected tensors \\['lm_head.weight'\\]"):
        Checkpoint(path)
    tensorfile.write(path / "more.safetensors", {"norm.scale": ("BF16", np.zeros(64, np.uint16))})
    with pytest.raises(CheckpointError, match="'norm.scale' appears in both"):
        Checkpoint(path)


@pytest.mark.parametrize("layout,name", [("orig", "block.0.attn.qkv.weight"),
                                         ("orig", "block.1.mlp.mlp1_weight.blocks"),
                                         ("hf", "model.layers.1.self_attn.q_proj.weight"),
                                         ("hf", "model.layers.0.mlp.experts.down_proj_scales")])
def test_wrong_shape_is_named(base, tmp_path, layout, name):
    path = copy(base[layout], tmp_path)
    rewrite(path / "model.safetensors", lambda t: t.update({name: (t[name][0], t[name][1].reshape(-1)[:, None])}))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        Checkpoint(path)


@pytest.mark.parametrize("name,dtype", [("block.0.attn.sinks", "U8"), ("block.0.mlp.mlp1_weight.scales", "BF16"),
                                        ("block.1.mlp.mlp2_weight.blocks", "F32")])
def test_wrong_dtype_is_named(base, tmp_path, name, dtype):
    path = copy(base["orig"], tmp_path)
    rewrite(path / "model.safetensors",
            lambda t: t.update({name: (dtype, t[name][1].astype(tensorfile.DTYPES[dtype][0]))}))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has dtype {dtype}"):
        Checkpoint(path)


def test_unsupported_dtype_is_named(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    header, data = read_raw(path / "model.safetensors")
    header["norm.scale"]["dtype"] = "I16"
    write_raw(path / "model.safetensors", header, data)
    with pytest.raises(CheckpointError, match="'norm.scale' has dtype I16"):
        Checkpoint(path)


# -- bad checkpoints: the file itself --------------------------------------------------------------------

def last_tensor(header):
    return max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])


def test_truncated_file_names_the_tensor(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    header, _ = read_raw(f)
    raw = f.read_bytes()
    f.write_bytes(raw[:-3])
    with pytest.raises(CheckpointError, match=f"tensor '{last_tensor(header)}' ends at byte .* truncated file"):
        Checkpoint(path)
    f.write_bytes(raw[:5])
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        Checkpoint(path)
    f.write_bytes(raw[:100])  # header cut
    with pytest.raises(CheckpointError, match="header length .* does not fit"):
        Checkpoint(path)


def test_corrupt_header_json(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[8] = ord("[")  # '{' -> '[': no longer valid JSON
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        Checkpoint(path)
    raw[8:12] = b"\xff\xfe\xfd\xfc"  # not UTF-8
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        Checkpoint(path)


def test_header_not_an_object_or_malformed_entry(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    header, data = read_raw(f)
    write_raw(f, [1, 2], data)
    with pytest.raises(CheckpointError, match="not a JSON object"):
        Checkpoint(path)
    header["norm.scale"] = {"dtype": "BF16", "shape": [64]}  # no data_offsets
    write_raw(f, header, data)
    with pytest.raises(CheckpointError, match="'norm.scale' has a malformed header entry"):
        Checkpoint(path)


def test_overlapping_offsets(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    header, data = read_raw(f)
    a, b = "block.0.attn.sinks", "block.1.attn.sinks"  # same shape and dtype
    header[b]["data_offsets"] = header[a]["data_offsets"]
    write_raw(f, header, data)
    with pytest.raises(CheckpointError, match=f"tensors '{a}' and '{b}' overlap"):
        Checkpoint(path)


def test_offsets_out_of_bounds_and_inconsistent(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    header, data = read_raw(f)
    b, e = header["norm.scale"]["data_offsets"]
    header["norm.scale"]["data_offsets"] = [len(data), len(data) + e - b]
    write_raw(f, header, data)
    with pytest.raises(CheckpointError, match="'norm.scale' ends at byte"):
        Checkpoint(path)
    header["norm.scale"]["data_offsets"] = [b, e - 2]
    write_raw(f, header, data)
    with pytest.raises(CheckpointError, match="'norm.scale' BF16\\[64\\] needs 128 bytes, offsets give 126"):
        Checkpoint(path)
    header["norm.scale"]["data_offsets"] = [e, b]
    write_raw(f, header, data)
    with pytest.raises(CheckpointError, match="'norm.scale' has invalid shape"):
        Checkpoint(path)


def test_bytes_that_belong_to_no_tensor(base, tmp_path):
    """As the safetensors library requires: the tensors tile the data region, no gap, nothing appended."""
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    header, data = read_raw(f)
    write_raw(f, header, data + b"\0" * 16)
    with pytest.raises(CheckpointError, match="16 bytes after the last tensor belong to no tensor"):
        Checkpoint(path)
    header.pop("__metadata__", None)
    first = min(header, key=lambda n: header[n]["data_offsets"][0])
    for info in header.values():  # shift every tensor by 4 bytes: a gap in front of the first one
        info["data_offsets"] = [o + 4 for o in info["data_offsets"]]
    write_raw(f, header, b"\0" * 4 + data)
    with pytest.raises(CheckpointError, match=f"4 bytes before tensor {first!r} belong to no tensor"):
        Checkpoint(path)


def test_offsets_must_be_integers(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    header, data = read_raw(f)
    b, e = header["norm.scale"]["data_offsets"]
    header["norm.scale"]["data_offsets"] = [float(b), float(e)]
    write_raw(f, header, data)
    with pytest.raises(CheckpointError, match="'norm.scale' has invalid shape .* or offsets"):
        Checkpoint(path)


def test_header_length_larger_than_file(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    f = path / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes((len(raw) * 2).to_bytes(8, "little") + raw[8:])
    with pytest.raises(CheckpointError, match=f"header length {len(raw) * 2} does not fit the file"):
        Checkpoint(path)


def test_folder_without_weights_or_config(tmp_path, base):
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        Checkpoint(tmp_path)
    path = copy(base["orig"], tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        Checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Checkpoint(path)
    path = copy(base["orig"], tmp_path, "other")
    rewrite(path / "model.safetensors", lambda t: t.pop("embedding.weight"))
    with pytest.raises(CheckpointError, match="neither embedding.weight .* nor model.embed_tokens.weight"):
        Checkpoint(path)


# -- bad checkpoints: config.json ------------------------------------------------------------------------

@pytest.mark.parametrize("layout,edit,words", [
    ("orig", lambda d: d.pop("rope_ntk_beta"), "missing keys: \\['rope_ntk_beta'\\]"),
    ("orig", lambda d: d.update(num_local_experts=4), "unknown keys: \\['num_local_experts'\\]"),
    ("hf", lambda d: d.pop("head_dim"), "missing key 'head_dim'"),
    ("hf", lambda d: d.update(rope_scalling={}), "unknown keys: \\['rope_scalling'\\]"),
])
def test_config_key_missing_or_unknown(base, tmp_path, layout, edit, words):
    path = copy(base[layout], tmp_path)
    d = json.loads((path / "config.json").read_text())
    edit(d)
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=words):
        Checkpoint(path)


def test_config_that_disagrees_with_the_tensors(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    (path / "config.json").write_text(json.dumps(TINY.to_json() | {"num_experts": 8}))
    words = "'block.0.mlp.gate.weight' has shape \\[4, 64\\], config implies \\[8, 64\\]"
    with pytest.raises(CheckpointError, match=words):
        Checkpoint(path)


# -- bad values ------------------------------------------------------------------------------------------

def bf16(x):
    return tensorfile.f64_to_bf16_bits(np.asarray(x, dtype=np.float64))


def nan_scale_checkpoint(tmp_path, layout, routed_bias):
    """Expert 2 of layer 1 has one 0xFF scale; gate.bias makes it always (or never) routed to."""
    from reference.writer import random_tensor
    shape, kind = expected_tensors(TINY)["block.1.mlp.mlp1_weight.scales"]
    scales = random_tensor(TINY, "block.1.mlp.mlp1_weight.scales", shape, kind, 0)
    scales[2, 5, 1] = 0xFF
    bias = np.zeros(TINY.num_experts)
    bias[2] = routed_bias
    return write_tiny(tmp_path / f"nan{routed_bias}", layout=layout, overrides={
        "block.1.mlp.mlp1_weight.scales": scales, "block.1.mlp.gate.bias": bf16(bias)})


@pytest.mark.parametrize("layout,name", [("original", "block.1.mlp.mlp1_weight.scales"),
                                         ("hf", "model.layers.1.mlp.experts.gate_up_proj_scales")])
def test_nan_scale_in_a_routed_expert_is_refused(tmp_path, layout, name):
    model = Model(nan_scale_checkpoint(tmp_path, layout, 1000.0))
    with pytest.raises(CheckpointError, match=f"'{name}' expert 2 has an E8M0 NaN scale"):
        model.logits(TOKENS)


def test_nan_scale_in_an_expert_never_routed_to_is_harmless(tmp_path):
    """Experts are decoded lazily; one that no token reaches is never read (its weights cannot matter)."""
    logits = Model(nan_scale_checkpoint(tmp_path, "original", -1000.0)).logits(TOKENS)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name,value", [("block.1.attn.qkv.weight", np.nan), ("norm.scale", np.inf),
                                        ("block.0.mlp.mlp2_bias", -np.inf), ("embedding.weight", np.nan)])
@pytest.mark.parametrize("layout", ["original", "hf"])
def test_non_finite_weights_are_named(tmp_path, name, value, layout):
    shape, _ = expected_tensors(TINY)[name]
    x = np.zeros(shape, dtype=np.uint16)  # bf16 +0.0
    bits = {np.nan: 0x7FC0, np.inf: 0x7F80, -np.inf: 0xFF80}[value]
    x.reshape(-1, shape[-1])[TOKENS[0] if name == "embedding.weight" else 0, 1] = bits
    path = write_tiny(tmp_path / "bad", layout=layout, overrides={name: x})
    src = name if layout == "original" else hf_name(name) if "qkv" not in name else \
        "model.layers.1.self_attn.q_proj.weight"
    with pytest.raises(CheckpointError, match=f"tensor '{src}' holds non-finite values"):
        Model(path).logits(TOKENS)


# -- dense experts (HF layout: gate_up_proj (E, C, 2I), down_proj (E, I, C), as transformers saves a fine-tune) --

@pytest.fixture(scope="module")
def dense(base, tmp_path_factory):
    """The dense twin of the tiny checkpoint (its MXFP4 experts decoded; every other tensor byte-identical)."""
    from reference.writer import write_dequantized
    return write_dequantized(base["orig"], tmp_path_factory.mktemp("dense") / "dense")


def test_dense_experts_are_detected_and_read_as_the_same_model(base, dense):
    ck = Checkpoint(dense)
    assert (ck.layout, ck.experts) == ("hf", "dense") and Checkpoint(base["hf"]).experts == "mxfp4"
    assert "quantization_config" not in json.loads((dense / "config.json").read_text())
    E, C, I = TINY.num_experts, TINY.hidden_size, TINY.intermediate_size
    assert ck.entries["model.layers.1.mlp.experts.gate_up_proj"].shape == (E, C, 2 * I)
    assert ck.entries["model.layers.1.mlp.experts.down_proj"].shape == (E, I, C)
    packed = Checkpoint(base["orig"])
    for got, want in zip(ck.expert(1, 3), packed.expert(1, 3)):  # W1 (2I, C), b1, W2 (C, I), b2
        assert got.shape == want.shape and np.array_equal(got, want)
    assert np.array_equal(Model(dense).logits(TOKENS), base["logits"])


def test_dense_written_at_random_is_read_in_original_orientation(tmp_path):
    """Random dense experts (not on the MXFP4 grid): expert() returns W1 (2I, C) = gate_up_proj[e].T."""
    from reference.writer import write_checkpoint
    path = write_tiny(tmp_path / "d", layout="hf", experts="dense", seed=4)
    ck = Checkpoint(path)
    gate_up = tensorfile.bf16_bits_to_f32(ck.entries["model.layers.0.mlp.experts.gate_up_proj"].memmap()[2])
    down = tensorfile.bf16_bits_to_f32(ck.entries["model.layers.0.mlp.experts.down_proj"].memmap()[2])
    W1, _, W2, _ = ck.expert(0, 2)
    assert np.array_equal(W1, gate_up.T) and np.array_equal(W2, down.T)
    with pytest.raises(AssertionError, match="HF layout only"):
        write_checkpoint(tmp_path / "o", TINY, experts="dense")


def test_dense_experts_in_the_original_layout_are_refused(base, tmp_path):
    path = copy(base["orig"], tmp_path)
    E, C, I = TINY.num_experts, TINY.hidden_size, TINY.intermediate_size
    rewrite(path / "model.safetensors",
            lambda t: t.update({"block.0.mlp.mlp1_weight": ("BF16", np.zeros((E, 2 * I, C), np.uint16))}))
    with pytest.raises(CheckpointError, match="original layout, which holds MXFP4 experts only"):
        Checkpoint(path)


def test_expert_weights_missing_altogether_are_named(base, tmp_path):
    """Biases but no expert weights in either format (what transformers 5.17 saves from a dequantized model)."""
    path = copy(base["hf"], tmp_path)
    rewrite(path / "model.safetensors",
            lambda t: [t.pop(n) for n in list(t) if n.endswith(("_proj_blocks", "_proj_scales"))])
    with pytest.raises(CheckpointError, match="experts' weights are missing, only their biases are here"):
        Checkpoint(path)


def test_mixed_expert_formats_are_refused(base, dense, tmp_path):
    path = copy(dense, tmp_path)
    packed = tensors_of(base["hf"] / "model.safetensors")
    name = "model.layers.1.mlp.experts.down_proj_blocks"
    rewrite(path / "model.safetensors", lambda t: t.update({name: packed[name]}))
    with pytest.raises(CheckpointError, match="experts both dense .* and MXFP4"):
        Checkpoint(path)


@pytest.mark.parametrize("name", ["model.layers.0.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"])
def test_dense_expert_in_original_orientation_is_named(tmp_path, name):
    """gate_up_proj stored as mlp1's (E, 2I, C) instead of HF's (E, C, 2I): the shape error says which. Only
    where the matrix is not square: tiny's gate_up (C = 2I = 64) and the release's down_proj (I = C = 2880)
    are, and there the orientation is checked by numbers alone (tests/test_ref_hf.py, against transformers)."""
    path = write_tiny(tmp_path / "d", tiny_config(intermediate_size=96), layout="hf", experts="dense")
    rewrite(path / "model.safetensors",
            lambda t: t.update({name: (t[name][0], np.ascontiguousarray(t[name][1].swapaxes(1, 2)))}))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        Checkpoint(path)


def test_dense_expert_wrong_dtype_and_non_finite_are_named(dense, tmp_path):
    name = "model.layers.0.mlp.experts.down_proj"
    path = copy(dense, tmp_path)
    rewrite(path / "model.safetensors", lambda t: t.update({name: ("U8", t[name][1].astype(np.uint8))}))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has dtype U8"):
        Checkpoint(path)
    path = copy(dense, tmp_path, "nan")

    def plant_nan(t):
        bits = t[name][1].copy()
        bits[1, 3, 5] = 0x7FC0  # a bf16 NaN in expert 1
        t[name] = ("BF16", bits)

    rewrite(path / "model.safetensors", plant_nan)
    ck = Checkpoint(path)
    ck.expert(0, 0)  # other experts read fine
    with pytest.raises(CheckpointError, match=f"'{name}' holds non-finite values"):
        ck.expert(0, 1)


def test_dequantizing_refuses_a_dense_checkpoint_and_scales_beyond_bf16(base, dense, tmp_path):
    from reference.writer import write_dequantized
    with pytest.raises(ValueError, match="already dense"):
        write_dequantized(dense, tmp_path / "again")
    path = copy(base["orig"], tmp_path)
    name = "block.0.mlp.mlp2_weight.scales"

    def huge_scale(t):
        s = t[name][1].copy()
        s[0, 0, 0] = 254  # 2^127: an FP4 6.0 times it is beyond bf16's largest value
        t[name] = ("U8", s)

    rewrite(path / "model.safetensors", huge_scale)
    blocks = tensors_of(path / "model.safetensors")["block.0.mlp.mlp2_weight.blocks"][1]
    if not np.any((blocks[0, 0, 0] & 0x0F) >= 0x6) and not np.any((blocks[0, 0, 0] >> 4) >= 0x6):
        pytest.skip("no FP4 code >= 4.0 in the planted block")  # seeded data: does not happen
    with pytest.raises(ValueError, match="beyond bf16's range"):
        write_dequantized(path, tmp_path / "huge")
