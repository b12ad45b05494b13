"""The kit's power: every deliberately wrong port in tests/wrong_ports/catalogue.py FAILS, and its failure
messages name what is wrong (the trap, or the first diverging stage). Each port runs the kit in-process on
the subset of checks its bug touches (golden data is loaded once for all runs)."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CATALOGUE_FILE = REPO / "tests" / "wrong_ports" / "catalogue.py"


def _catalogue():
    import importlib.util
    spec = importlib.util.spec_from_file_location("wrong_ports_catalogue", CATALOGUE_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CATALOGUE


CATALOGUE = _catalogue()


def run_kit(impl: str, selection: list[str], cert_dir: Path, monkeypatch, extra=()) -> tuple[int, dict]:
    monkeypatch.chdir(REPO)
    rc = pytest.main([*selection, "--impl", impl, "--certificate", str(cert_dir), "-q", "--no-header",
                      "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", *extra])
    return int(rc), json.loads((cert_dir / "certificate.json").read_text())


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_wrong_port_fails_and_is_named(name, dtype, tmp_path, monkeypatch):
    """float64: the ports' own dtype (tightest bounds); bfloat16: the loosest bounds the kit has, so each bug
    is shown to stand out even against a bf16 port's rounding."""
    expected, selection = CATALOGUE[name]
    rc, cert = run_kit(f"{CATALOGUE_FILE}:{name}", selection, tmp_path, monkeypatch, ["--dtype", dtype])
    assert rc == pytest.ExitCode.TESTS_FAILED, f"{name}: the kit did not fail this wrong port (exit {rc})"
    assert cert["summary"]["verdict"] == "NOT CONFORMANT"
    messages = "\n".join(c["message"] for c in cert["checks"] if c["status"] == "fail")
    # at bf16 bounds only the primary fragment is required: e.g. rounded YaRN bounds move a 24-token prompt's
    # logits by less than bf16 rounding, but the RoPE op vectors (positions to 131072) still name the trap
    for fragment in expected if dtype == "float64" else expected[:1]:
        assert fragment in messages, f"{name}: no failure message mentions {fragment!r}:\n{messages}"


def test_catalogue_covers_the_spec_traps():
    """Every trap SPEC.md lists has a wrong port (the issue's list, plus the extras named there)."""
    must = {"yarn_rounded", "sink_ignored", "route_softmax_all", "swiglu_no_plus1", "swiglu_no_clamp",
            "nibble_order", "swiglu_split_halves", "window_off_by_one", "window_wrong_layers", "gqa_interleaved",
            "e8m0_bias", "rms_eps", "rope_not_on_k", "no_final_norm", "swiglu_limit_fixed", "render_keeps_analysis",
            "render_history_return", "render_no_generation_prompt", "render_drops_constrain", "parse_lenient",
            "parse_drops_recipient", "detokenize_lossy", "stream_decodes_each_token",
            "render_drops_unrenderable", "tokenize_special_whole_string", "dense_down_proj_untransposed",
            "yarn_only_beyond_context"}
    assert must <= set(CATALOGUE), sorted(must - set(CATALOGUE))
