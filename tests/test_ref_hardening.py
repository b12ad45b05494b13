"""Hardening of reference/ (issue 19): safetensors headers that lie about sizes or nest without end, the one token
rule (reference/tokens.py, shared with the engine), attention in query chunks (bitwise the one-block result), and
the command line: every error one line on stderr, exit 2, the traceback only with --debug."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from reference import attention
from reference.__main__ import main as reference_main
from reference.checkpoint import Checkpoint
from reference.model import Model
from reference.tensorfile import CheckpointError, read_header
from reference.tokens import check_tokens

from helpers import BAD_TOKENS, GOOD_TOKENS, TINY, read_raw, write_raw, write_tiny


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("hard") / "tiny")


# -- safetensors headers ---------------------------------------------------------------------------------------

def test_a_shape_whose_byte_size_wraps_int64_is_refused_by_name(ckpt, tmp_path):
    """[2**62 + 16, 4] BF16 is 2**65 + 128 bytes; NumPy's int64 product wraps it to 128, the real size is refused."""
    header, data = read_raw(ckpt / "model.safetensors")
    b, e = header["norm.scale"]["data_offsets"]
    assert e - b == 128  # BF16[64]
    header["norm.scale"]["shape"] = [2**62 + 16, 4]
    write_raw(tmp_path / "x.safetensors", header, data)
    with pytest.raises(CheckpointError, match=r"'norm.scale' BF16\[4611686018427387920, 4\] needs "
                                              r"36893488147419103360 bytes, offsets give 128"):
        read_header(tmp_path / "x.safetensors")


def test_a_deeply_nested_header_is_a_named_error_not_a_recursion_error(ckpt, tmp_path):
    header, data = read_raw(ckpt / "model.safetensors")
    raw = json.dumps(header).encode()
    deep = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b", " + raw[1:]  # json.loads recurses per level
    (tmp_path / "deep.safetensors").write_bytes(len(deep).to_bytes(8, "little") + deep + data)
    with pytest.raises(CheckpointError, match="nests too deeply"):
        read_header(tmp_path / "deep.safetensors")
    shallow = b'{"x": ' + b"[" * 50 + b"]" * 50 + b", " + raw[1:]  # parses, but is not a tensor entry
    (tmp_path / "shallow.safetensors").write_bytes(len(shallow).to_bytes(8, "little") + shallow + data)
    with pytest.raises(CheckpointError, match="tensor 'x' has a malformed header entry"):
        read_header(tmp_path / "shallow.safetensors")


def test_metadata_must_be_strings(ckpt, tmp_path):
    header, data = read_raw(ckpt / "model.safetensors")
    header["__metadata__"] = {"format": {"nested": [1]}}
    write_raw(tmp_path / "m.safetensors", header, data)
    with pytest.raises(CheckpointError, match="__metadata__ must map strings to strings"):
        read_header(tmp_path / "m.safetensors")


# -- tokens: one rule, reference/tokens.py -----------------------------------------------------------------------

@pytest.mark.parametrize("tokens,words", BAD_TOKENS, ids=range(len(BAD_TOKENS)))
def test_bad_tokens_are_refused_by_position(tokens, words):
    with pytest.raises(ValueError, match=words):
        check_tokens(tokens, TINY.vocab_size)


@pytest.mark.parametrize("tokens", GOOD_TOKENS, ids=range(len(GOOD_TOKENS)))
def test_good_tokens(tokens):
    got = check_tokens(tokens, TINY.vocab_size)
    assert got.dtype == np.int64 and got.tolist() == [1, 2, 3]


def test_torch_tensors_follow_the_same_rule():
    torch = pytest.importorskip("torch")
    assert check_tokens(torch.tensor([1, 2, 3]), 97).tolist() == [1, 2, 3]
    for t, words in [(torch.tensor([True, False]), "token True at position 0 is a bool"),
                     (torch.tensor([1.0, 2.5]), "token 1.0 at position 0 is a float"),
                     (torch.tensor(3), "got a 0-d tensor"), (torch.tensor([[1, 2]]), "position 0 holds a list"),
                     (torch.tensor([1, 97]), "token id 97 at position 1 is outside")]:
        with pytest.raises(ValueError, match=words):
            check_tokens(t, 97)


def test_model_uses_the_rule(ckpt):
    with pytest.raises(ValueError, match="tokens must be integers: token True at position 0 is a bool"):
        Model(ckpt).logits([True, False])


# -- attention in query chunks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("past", [0, 5])
def test_chunked_attention_is_bitwise_the_one_block_result(window, past):
    """17 queries after `past` cached keys, in chunks of 1, 3 and 5 queries: windows and the sink straddle the
    chunk borders; every chunking gives the one-block result bit for bit (each query row is computed alone)."""
    rng = np.random.default_rng(7)
    T, K, G, D = 17, 2, 3, 8
    S = past + T
    q, k, v = rng.standard_normal((T, K, G, D)), rng.standard_normal((S, K, D)), rng.standard_normal((S, K, D))
    sinks = 2 * rng.standard_normal((K, G))
    q_pos, k_pos = np.arange(past, S), np.arange(S)
    whole = attention.sdpa(q, k, v, sinks, q_pos, k_pos, window, chunk=T)
    for chunk in (1, 3, 5):
        got = attention.sdpa(q, k, v, sinks, q_pos, k_pos, window, chunk=chunk)
        assert got.tobytes() == whole.tobytes(), chunk


def test_default_chunk_bounds_the_scores():
    assert attention.query_chunk(K=8, G=8, S=20_000) * 8 * 8 * 20_000 <= attention.SCORES_AT_ONCE
    assert attention.query_chunk(K=1, G=1, S=10) == attention.SCORES_AT_ONCE // 10
    assert attention.query_chunk(K=64, G=64, S=10**9) == 1


def test_model_logits_with_tiny_chunks_are_bitwise_the_same(ckpt, monkeypatch):
    tokens = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26]  # 12 tokens > window 4
    want = Model(ckpt).logits(tokens)
    monkeypatch.setattr(attention, "SCORES_AT_ONCE", 2 * 2 * 12 * 3)  # 3 queries a chunk over 12 keys
    assert Model(ckpt).logits(tokens).tobytes() == want.tobytes()


# -- the command line ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,words", [
    (["--tokens", ""], "argument --tokens: no token ids in ''"),
    (["--tokens", "1,x"], "argument --tokens: comma-separated integers expected, got '1,x'"),
    (["--tokens", "-1"], "argument --tokens: token id -1 at position 0 is negative"),
    (["--tokens", "999999"], r"--tokens: token id 999999 at position 0 is outside the vocabulary \[0, 97\)"),
    (["--steps", "-1"], r"argument --steps: must be an integer >= 0, got '-1'"),
    (["--steps", "two"], r"argument --steps: must be an integer >= 0, got 'two'"),
])
def test_cli_argument_errors_are_one_line_exit_2(ckpt, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        reference_main(["--checkpoint", str(ckpt), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m reference: ") and re.search(words, err), err


def test_cli_checkpoint_errors_are_one_line_exit_2(ckpt, tmp_path, capsys):
    bad = shutil.copytree(ckpt, tmp_path / "bad")
    (bad / "config.json").write_text("{}")
    for path, words in [(tmp_path / "nowhere", "nowhere: not a checkpoint folder"), (tmp_path, "no *.safetensors"),
                        (bad, "ConfigError: ")]:
        with pytest.raises(SystemExit) as e:
            reference_main(["--checkpoint", str(path)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_cli_process_one_line_and_debug_traceback(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "reference", "--checkpoint", str(tmp_path / "nowhere"), *a],
                              capture_output=True, text=True, timeout=60)
    r = run()
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    r = run("--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
