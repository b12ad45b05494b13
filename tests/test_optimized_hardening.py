"""Hardening of optimized/ (issue 19): non-finite logits raise NonFiniteError naming the first stage that made them
(found by a layer-by-layer re-run only after the cheap check failed), the engine takes tokens by the reference's one
rule (reference/tokens.py), and `python -m optimized` fails in one line with exit status 2 (--debug: the traceback).

The non-finite case: every E8M0 scale of block.0.mlp.mlp2_weight 0xFE (2^127). FP4 values of 2 and up times 2^127
exceed float32's (and bf16's) largest value, 3.4e38, and the residual stream after block.0.mlp reaches ~1e40 in the
reference's float64 (then normalized back to finite logits). The engine cannot hold it in its dtype: inf, then NaN.
"""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from optimized.__main__ import main as optimized_main
from optimized.generate import Engine, RequestError
from optimized.model import Model
from optimized.nonfinite import NonFiniteError
from optimized.sampling import Sampling
from reference.checkpoint import expected_tensors
from reference.model import Model as RefModel
from reference.tokens import check_tokens

from helpers import BAD_TOKENS, GOOD_TOKENS, TINY, write_tiny

torch.set_num_threads(1)
TOKENS = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38]
OVERFLOW = "block.0.mlp.mlp2_weight.scales"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    shape, _ = expected_tensors(TINY)[OVERFLOW]
    huge = {OVERFLOW: np.full(shape, 0xFE, dtype=np.uint8)}
    return {"good": write_tiny(root / "good"), "huge": write_tiny(root / "huge", overrides=huge),
            "huge-hf": write_tiny(root / "huge-hf", layout="hf", overrides=huge)}


def test_the_reference_stays_finite_where_float32_cannot(ckpts):
    stages = {}
    ref = RefModel(ckpts["huge"])
    logits = ref.forward(TOKENS, ref.new_cache(), capture=stages)
    assert np.isfinite(logits).all()
    assert np.abs(stages["block.0.mlp"]).max() > 1e39 > float(np.finfo(np.float32).max)  # beyond float32: no bug


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout,name", [("huge", OVERFLOW),
                                         ("huge-hf", "model.layers.0.mlp.experts.down_proj_scales")])
def test_non_finite_logits_name_the_first_stage_and_tensor(ckpts, dtype, layout, name):
    engine = Engine(Model.load(ckpts[layout], "cpu", dtype), context=32, prefill_chunk=4)
    with pytest.raises(NonFiniteError) as e:
        engine.logits(TOKENS)
    msg = str(e.value)
    assert "\n" not in msg
    assert re.search(r"^non-finite logits \(970 of 970 NaN\) for 10 tokens: non-finite values first appear in "
                     r"block\.0\.mlp \([^)]* of 640( NaN| inf)?\); ", msg), msg  # 10 tokens x 64, over 3 chunks
    assert f"the checkpoint's {name} may overflow" in msg and "beyond" in msg, msg


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_raises_instead_of_sampling_nan(ckpts, temperature):
    engine = Engine(Model.load(ckpts["huge"], "cpu", torch.float32), context=32)
    seen = []
    with pytest.raises(NonFiniteError, match=r"first appear in block\.0\.mlp .*mlp2_weight\.scales may overflow"):
        engine.generate([TOKENS, TOKENS[:3]], 4, Sampling(temperature, seed=0), on_token=lambda b, t: seen.append(t))
    assert seen == []  # nothing made of NaN was streamed


def test_a_decode_step_that_goes_non_finite_is_located_on_the_decode_path(ckpts, monkeypatch):
    """The prefill and the first decode step are finite; the second step's logits are not (planted: block.1.mlp's
    output on the decode path, once the first token is streamed; the step after it is launched before that). The
    re-run feeds the prompt and the two tokens chosen so far, the last on the decode path, and names block.1.mlp."""
    from optimized import model as model_mod
    engine = Engine(Model.load(ckpts["good"], "cpu", torch.float32), context=32)
    real = model_mod.moe_block

    def broken(x, w, c, ops, *rest):
        out = real(x, w, c, ops, *rest)
        return out.fill_(float("inf")) if x.shape[1] == 1 and w is engine.model.weights.mlp[1] and \
            engine.model.poison else out

    monkeypatch.setattr(model_mod, "moe_block", broken)
    engine.model.poison = False
    first = engine.generate([TOKENS], 3).tokens[0]
    steps = []

    def on_token(b, t):
        steps.append(t)
        engine.model.poison = True  # from the first decode step on
    with pytest.raises(NonFiniteError, match=rf"for prompt 0 after {len(TOKENS) + 2} tokens: non-finite values first "
                                             r"appear in block\.1\.mlp \(64 of 768 inf\)"):
        engine.generate([TOKENS], 3, on_token=on_token)
    assert steps == first[:2]


def test_good_checkpoints_pass_the_check(ckpts):
    engine = Engine(Model.load(ckpts["good"], "cpu", torch.float32), context=32)
    assert torch.isfinite(engine.logits(TOKENS)).all()
    assert len(engine.generate([TOKENS], 3, Sampling(1.0, 0.9, seed=1)).tokens[0]) == 3


# -- tokens: the reference's rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("tokens,words", BAD_TOKENS, ids=range(len(BAD_TOKENS)))
def test_engine_refuses_tokens_as_the_reference_does(ckpts, tokens, words):
    engine = Engine(Model.load(ckpts["good"], "cpu", torch.float32), context=32)
    with pytest.raises(ValueError) as ref:
        check_tokens(tokens, TINY.vocab_size)
    with pytest.raises(RequestError, match=words) as e:
        engine.logits(tokens)
    assert str(e.value) == "prompt 0" + str(ref.value).removeprefix("tokens")


@pytest.mark.parametrize("tokens", GOOD_TOKENS + [torch.tensor([1, 2, 3])], ids=range(len(GOOD_TOKENS) + 1))
def test_engine_accepts_what_the_reference_accepts(ckpts, tokens):
    engine = Engine(Model.load(ckpts["good"], "cpu", torch.float32), context=32)
    assert engine.check([tokens]) == [[1, 2, 3]]


# -- the command line ------------------------------------------------------------------------------------------

def cli(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        optimized_main(list(argv))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err.strip().splitlines()


@pytest.mark.parametrize("argv,words", [
    (["--tokens", ""], "argument --tokens: no token ids in ''"),
    (["--tokens", "-1"], "argument --tokens: token id -1 at position 0 is negative"),
    (["--tokens", "999999"], r"--tokens: token id 999999 at position 0 is outside the vocabulary \[0, 97\)"),
    (["--tokens", "1", "--top-p", "2"], r"argument --top-p: must be a finite number in \(0, 1\], got '2'"),
    (["--tokens", "1", "--temperature", "nan"], r"argument --temperature: must be a finite number >= 0, got 'nan'"),
    (["--tokens", "1", "--max-new-tokens", "-1"], r"argument --max-new-tokens: must be an integer >= 0, got '-1'"),
    (["--tokens", "1", "--context", "0"], r"argument --context: must be an integer >= 1, got '0'"),
    (["--tokens", "1", "--seed", "-5"], r"argument --seed: must be an integer in \[0, 18446744073709551615\]"),
    (["--tokens", "1", "--max-new-tokens", "40", "--context", "8"], r"RequestError: .* more than the context of 8"),
    ([], "generate: give exactly one of --tokens 1,2,3 or --prompt TEXT"),
])
def test_cli_argument_errors_are_one_line_exit_2(ckpts, capsys, argv, words):
    code, _, err = cli(capsys, "generate", "--checkpoint", str(ckpts["good"]), *argv)
    assert code == 2 and len(err) == 1 and re.search(words, err[0]), err
    assert err[0].startswith("python -m optimized generate: ")


def test_cli_checkpoint_and_chat_errors_are_one_line_exit_2(ckpts, tmp_path, capsys):
    code, _, err = cli(capsys, "generate", "--checkpoint", str(tmp_path / "nowhere"), "--tokens", "1")
    assert code == 2 and err == [f"python -m optimized generate: CheckpointError: {tmp_path / 'nowhere'}: "
                                 f"not a checkpoint folder"]
    code, _, err = cli(capsys, "chat", "--checkpoint", str(ckpts["good"]), "--message", "hi")
    assert code == 2 and len(err) == 1 and "generate --tokens" in err[0], err


def test_cli_non_finite_is_one_line_exit_2_and_prints_no_tokens(ckpts, capsys):
    code, out, err = cli(capsys, "generate", "--checkpoint", str(ckpts["huge"]), "--tokens", "1,2,3",
                         "--temperature", "0", "--dtype", "fp32")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("python -m optimized generate: NonFiniteError: non-finite logits") and \
        "block.0.mlp" in err[0] and OVERFLOW in err[0], err
    assert out.split("new:")[1].strip() == ""


def test_cli_process_no_traceback_unless_debug(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "optimized", "generate", "--checkpoint", str(tmp_path / "nowhere"),
                               "--tokens", "1", *a], capture_output=True, text=True, timeout=120)
    r = run()
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    r = run("--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "not a checkpoint folder" in r.stderr
