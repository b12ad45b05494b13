"""The conformance kit itself: the built-in impls pass, the golden data is trusted only when it verifies and
reproduces, certificates verify (and tampered ones do not), exec: and --golden from a user's checkpoint work,
missing capabilities are NOT_SUPPORTED (never passed). The wrong-ports catalogue is in
test_conformance_wrong_ports.py."""
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden import generate as G
from golden.format import DATA_DIR, load_npz, verify
from reference.model import Model

REPO = Path(__file__).resolve().parent.parent


def run_kit(args: list[str], cert: Path, monkeypatch) -> tuple[int, dict]:
    monkeypatch.chdir(REPO)
    rc = pytest.main([*args, "--certificate", str(cert), "-q", "--no-header", "-p", "no:cacheprovider",
                      "-W", "ignore::DeprecationWarning", "-W", "ignore::FutureWarning"])
    data = json.loads((cert / "certificate.json").read_text()) if (cert / "certificate.json").is_file() else {}
    return int(rc), data


def failures(cert: dict) -> str:
    return "\n".join(c["message"] for c in cert["checks"] if c["status"] == "fail")


def test_reference_passes_everything_and_certificate_verifies(tmp_path, monkeypatch):
    rc, cert = run_kit(["conformance/", "--impl", "reference"], tmp_path, monkeypatch)
    assert rc == 0, failures(cert)
    s = cert["summary"]
    assert s["verdict"] == "CONFORMANT" and s["fail"] == 0 and s["not_supported"] == 0 and s["pass"] >= 50
    from conformance.certificate import verify as verify_cert
    assert verify_cert(tmp_path) == []
    out = subprocess.run([sys.executable, "-m", "conformance", "verify", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # tamper: a failing measurement recorded as a pass, and the markdown no longer matching
    bad = json.loads((tmp_path / "certificate.json").read_text())
    m = next(m for c in bad["checks"] for m in c["measures"] if m.get("bound"))
    m["measured"] = m["bound"] * 10
    (tmp_path / "certificate.json").write_text(json.dumps(bad))
    problems = verify_cert(tmp_path)
    assert any("recorded ok=True" in p for p in problems) and any("certificate.md" in p for p in problems)
    out = subprocess.run([sys.executable, "-m", "conformance", "verify", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "does NOT verify" in out.stdout
    # tamper: a loosened bound (and status kept consistent with it) is caught against the golden baselines
    bad = json.loads((tmp_path / "certificate.json").read_text())
    m = next(m for c in bad["checks"] for m in c["measures"] if m.get("check", "").startswith("logits/tiny"))
    m["bound"] = 1.0
    (tmp_path / "certificate.json").write_text(json.dumps(bad))
    assert any("is not the contract's" in p for p in verify_cert(tmp_path))


@pytest.fixture()
def golden_copy(tmp_path):
    dst = tmp_path / "golden"
    shutil.copytree(DATA_DIR, dst, ignore=shutil.ignore_patterns("derived"))
    return dst


def test_altered_golden_file_fails_every_check(golden_copy, tmp_path, monkeypatch):
    f = golden_copy / "cases" / "tiny.npz"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 1
    f.write_bytes(bytes(raw))
    rc, cert = run_kit(["conformance/test_golden.py", "conformance/test_ops.py::test_op_swiglu",
                        "--impl", "reference", "--golden", str(golden_copy)], tmp_path / "c", monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED
    assert all(c["status"] == "fail" for c in cert["checks"]), [c["status"] for c in cert["checks"]]
    assert "altered golden file cases/tiny.npz" in failures(cert)


def test_missing_golden_file_fails_not_skips(golden_copy, tmp_path, monkeypatch):
    (golden_copy / "ops" / "rope.npz").unlink()
    rc, cert = run_kit(["conformance/test_golden.py", "conformance/test_ops.py::test_op_mxfp4",
                        "--impl", "reference", "--golden", str(golden_copy)], tmp_path / "c", monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED
    assert "missing golden file ops/rope.npz" in failures(cert)
    assert not any(c["status"] in ("pass", "skipped", "not_supported") for c in cert["checks"])


def test_regeneration_reproduces_committed_data(tmp_path):
    """One checkpoint case and all op vectors regenerated: reference values equal to float64 rounding,
    baseline errors (torch's bf16/fp32 kernels may differ by machine) within a factor 2, text exactly."""
    G.generate(tmp_path, only=["gqa2-top3-wide"])
    for rel in ["checkpoints/gqa2-top3-wide/model.safetensors", "checkpoints/gqa2-top3-wide/config.json"]:
        assert (tmp_path / rel).read_bytes() == (DATA_DIR / rel).read_bytes(), rel
    for rel in ["cases/gqa2-top3-wide.npz", *[f"ops/{op}.npz" for op in G.OPS]]:
        new, old = load_npz(tmp_path / rel), load_npz(DATA_DIR / rel)
        assert sorted(new) == sorted(old), rel
        for k in old:
            if ".baseline." in f".{k}" or k.startswith("baseline."):
                assert 0.5 * old[k] <= new[k] <= 2 * old[k] + 1e-12, (rel, k, old[k], new[k])
            elif old[k].dtype.kind == "f":
                np.testing.assert_allclose(new[k], old[k], rtol=1e-12, atol=1e-12, err_msg=f"{rel}:{k}")
            else:
                np.testing.assert_array_equal(new[k], old[k], err_msg=f"{rel}:{k}")
    assert (tmp_path / "text/vectors.json").read_text() == (DATA_DIR / "text/vectors.json").read_text()
    manifest = verify(tmp_path)
    committed = json.loads((DATA_DIR / "manifest.json").read_text())
    for form in ("hf", "hf-dense"):
        for f in ("model.safetensors", "config.json"):
            rel = f"derived/{form}/gqa2-top3-wide/{f}"
            assert manifest["derived"][rel] == committed["derived"][rel], rel


def test_hf_copy_matches_derived_golden_and_reference(tmp_path):
    """The built-in adapters convert original -> HF layout (hf_layout.py); the result is byte-identical to the golden
    derived copy (converted the same way, golden/derived.py) and to the HF layout written from the seed (the other
    path of reference/writer.py), and the reference reads both to identical logits."""
    from conformance.impls.hf_layout import to_hf
    from golden.derived import checkpoint_dir
    from reference.writer import write_checkpoint
    manifest = verify(DATA_DIR)
    for name, (config, seed, _, _) in G.CHECKPOINTS.items():
        derived = checkpoint_dir(DATA_DIR, manifest, "hf", name)
        seeded = write_checkpoint(tmp_path / "seeded" / name, config, seed=seed, layout="hf",
                                  overrides=G.conditioning(name, config, seed))
        for f in ("model.safetensors", "config.json"):
            assert (seeded / f).read_bytes() == (derived / f).read_bytes(), (name, f)
    name = "gqa2-top2"
    hf = to_hf(DATA_DIR / "checkpoints" / name, tmp_path / "hf")
    derived = checkpoint_dir(DATA_DIR, manifest, "hf", name) / "model.safetensors"
    assert hashlib.sha256((hf / "model.safetensors").read_bytes()).hexdigest() == \
        hashlib.sha256(derived.read_bytes()).hexdigest()
    tokens = load_npz(DATA_DIR / "cases" / f"{name}.npz")["tokens"].tolist()
    a = Model(DATA_DIR / "checkpoints" / name).logits(tokens)
    b = Model(hf).logits(tokens)
    np.testing.assert_array_equal(a, b)


def _hf_reads_swiglu_limit() -> bool:
    """Whether the installed transformers' GptOssExperts takes its clamp from config.swiglu_limit (5.25 does;
    5.17 hard-codes 7.0, the kit's swiglu_limit_fixed trap)."""
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts
    cfg = GptOssConfig(hidden_size=8, intermediate_size=8, num_local_experts=2, swiglu_limit=3.0)
    return GptOssExperts(cfg).limit == 3.0


def test_transformers_passes(tmp_path, monkeypatch):
    """HF transformers, an independent port, passes the model checks: on tiny (swiglu_limit 7, gpt-oss's value)
    always; on gqa2-top2 (swiglu_limit 3) only where it reads the limit from the config. Where it does not
    (5.17), the kit fails it there and says where: the first MoE block."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    sel = ["conformance/test_model.py", "-k", "tiny or gqa2-top2", "--impl", "transformers"]
    rc, cert = run_kit(sel, tmp_path / "fp32", monkeypatch)
    assert cert["implementation"]["dtype"] == "float32"
    failed = [c for c in cert["checks"] if c["status"] == "fail"]
    if _hf_reads_swiglu_limit():
        assert rc == 0, failures(cert)
        assert cert["summary"]["pass"] >= 8
    else:
        assert failed and all("gqa2-top2" in c["check"] for c in failed), failures(cert)
        assert any("first diverging stage: block.0.mlp" in c["message"] for c in failed), failures(cert)
        assert cert["summary"]["pass"] >= 4  # tiny's checks
    rc, cert = run_kit(["conformance/test_model.py::test_logits", "conformance/test_model.py::test_greedy",
                        "--impl", "transformers", "--dtype", "bfloat16"], tmp_path / "bf16", monkeypatch)
    assert rc == 0, failures(cert)
    assert "bfloat16" in cert["implementation"]["name"] and cert["implementation"]["dtype"] == "bfloat16"


def test_exec_example_port(tmp_path, monkeypatch):
    impl = f"exec:{sys.executable} conformance/examples/exec_port.py"
    rc, cert = run_kit(["conformance/test_ops.py", "conformance/test_model.py", "-k", "not greedy or tiny",
                        "--impl", impl], tmp_path, monkeypatch)
    assert rc == 0, failures(cert)
    ident = cert["implementation"]
    assert ident["dtype"] == "float32" and "op_attention" in ident["capabilities"]
    statuses = {c["check"].split("[")[0]: c["status"] for c in cert["checks"]}
    assert statuses["test_model.py::test_stages"] == "not_supported"  # the example does not expose stages
    assert statuses["test_model.py::test_decode"] == "pass"


def test_logits_only_port_is_not_supported_not_passed(tmp_path, monkeypatch):
    port = tmp_path / "bare.py"
    port.write_text("from reference.model import Model\n"
                    "class Bare:\n"
                    "    def __init__(self, d): self.m = Model(d)\n"
                    "    def logits(self, tokens): return self.m.logits(tokens).astype('float32')\n"
                    "def factory(d): return Bare(d)\n")
    rc, cert = run_kit(["conformance/", "-k", "tiny or op_swiglu or tokenizer", "--impl", f"{port}:factory"],
                       tmp_path / "c", monkeypatch)
    assert rc == 0, failures(cert)
    by = {c["check"]: c for c in cert["checks"]}
    swiglu = [c for n, c in by.items() if "op_swiglu" in n]
    assert swiglu and all(c["status"] == "not_supported" and c["message"].startswith("not supported:") for c in swiglu)
    assert by["test_model.py::test_logits[tiny]"]["status"] == "pass"
    assert cert["implementation"]["dtype"] == "bfloat16"  # undeclared dtype: the loosest bounds, and said so
    assert "declares no dtype" in cert["implementation"]["dtype_note"]


def test_text_only_port_runs_the_text_checks_and_fails_the_model_ones(tmp_path, monkeypatch):
    """A chat-template / tokenizer library (no logits) certifies its text side; any model check fails, saying why."""
    port = tmp_path / "chat.py"
    port.write_text("from harmony import Conversation, Role, build, load_harmony_encoding\n"
                    "class Chat:\n"
                    "    def __init__(self, d): self.enc = load_harmony_encoding('HarmonyGptOss')\n"
                    "    def render(self, c):\n"
                    "        conv = Conversation.from_json(c)\n"
                    "        return self.enc.render_conversation_for_completion(conv, Role.ASSISTANT)\n"
                    "    def parse_stream(self, tokens): return build.stream(tokens)\n"
                    "def factory(d): return Chat(d)\n")
    rc, cert = run_kit(["conformance/test_text.py", "--impl", f"{port}:factory"], tmp_path / "a", monkeypatch)
    assert rc == 0, failures(cert)
    status = {c["check"].split("::")[-1]: c["status"] for c in cert["checks"]}
    assert status["test_harmony_render"] == status["test_harmony_parse_stream"] == "pass"
    assert status["test_tokenizer"] == status["test_harmony_parse"] == "not_supported"
    assert "logits" not in cert["implementation"]["capabilities"]
    rc, cert = run_kit(["conformance/test_model.py::test_logits[tiny]", "--impl", f"{port}:factory"], tmp_path / "b",
                       monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED and "no logits() method" in failures(cert)


def test_golden_from_a_user_checkpoint(tmp_path, monkeypatch):
    """python -m golden --checkpoint on an original-layout checkpoint; the kit runs against it with --golden and
    refuses it once the checkpoint's config changes."""
    from reference.writer import write_checkpoint
    from reference.config import Config
    cfg = Config.from_json(json.loads((DATA_DIR / "checkpoints" / "gqa2-top2" / "config.json").read_text()))
    ckpt = write_checkpoint(tmp_path / "mine", cfg, seed=5, layout="original")
    out = tmp_path / "golden-mine"
    proc = subprocess.run([sys.executable, "-m", "golden", "--checkpoint", str(ckpt), "--out", str(out),
                           "--tokens", "1,2,3,4,5,6,7,8,9,10", "--steps", "3"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "[" in proc.stderr and "3/" in proc.stderr or "manifest" in proc.stderr  # a progress bar on stderr
    rc, cert = run_kit(["conformance/test_model.py", "--impl", "reference", "--golden", str(out)],
                       tmp_path / "c", monkeypatch)
    assert rc == 0, failures(cert)
    assert cert["golden"]["kind"] == "user-checkpoint" and cert["summary"]["pass"] >= 4
    (ckpt / "config.json").write_text((ckpt / "config.json").read_text().replace('"sliding_window": 6', '"sliding_window": 5'))
    rc, cert = run_kit(["conformance/test_model.py::test_logits", "--impl", "reference", "--golden", str(out)],
                       tmp_path / "c2", monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED and "config.json changed" in failures(cert)


def test_golden_from_a_dense_fine_tune(tmp_path, monkeypatch):
    """A bf16 fine-tune as transformers saves it (HF layout, dense experts, no quantization_config): golden data
    from it, and the reference and the optimized engine certified against it, each handed that folder as is."""
    from reference.config import Config
    from reference.writer import write_checkpoint
    cfg = Config.from_json(json.loads((DATA_DIR / "checkpoints" / "gqa2-top2" / "config.json").read_text()))
    ckpt = write_checkpoint(tmp_path / "fine-tune", cfg, seed=6, layout="hf", experts="dense", shards=2)
    out = tmp_path / "golden-ft"
    proc = subprocess.run([sys.executable, "-m", "golden", "--checkpoint", str(ckpt), "--out", str(out),
                           "--tokens", "1,2,3,4,5,6,7,8,9,10,11,12", "--steps", "2"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads((out / "manifest.json").read_text())["checkpoints"]["fine-tune-0"]
    assert (entry["layout"], entry["experts"]) == ("hf", "dense")
    assert "model.safetensors.index.json" in entry["files"]
    for impl in ("reference", "optimized"):
        rc, cert = run_kit(["conformance/test_model.py", "--impl", impl, "--golden", str(out)], tmp_path / impl,
                           monkeypatch)
        assert rc == 0, failures(cert)
        assert cert["summary"]["pass"] >= 4 and cert["summary"].get("fail", 0) == 0


def test_layout_hands_ports_the_checkpoint_in_that_form(tmp_path, monkeypatch):
    """--layout hf / hf-dense: the port gets the golden checkpoint under HF names, or its dense twin (written on
    first use, hash-checked), and the same golden logits hold; the certificate says which form. With golden data
    from a user's own checkpoint the option is refused (that folder is handed as it is)."""
    from reference.checkpoint import Checkpoint
    from reference.config import Config
    from reference.writer import write_checkpoint
    seen = tmp_path / "seen.txt"
    port = tmp_path / "port.py"
    port.write_text("import pathlib\n"
                    "from conformance.impls.reference import ReferenceImpl\n"
                    f"def factory(d):\n    pathlib.Path({str(seen)!r}).write_text(str(d))\n"
                    "    return ReferenceImpl(d)\n")
    for layout, experts in (("hf", "mxfp4"), ("hf-dense", "dense")):
        rc, cert = run_kit(["conformance/test_model.py::test_logits[gqa1-top1-odd]", "--impl", f"{port}:factory",
                            "--layout", layout], tmp_path / layout,
                           monkeypatch)
        assert rc == 0, failures(cert)
        assert cert["implementation"]["checkpoint_layout"] == layout
        assert f"checkpoints handed in the {layout} layout" in (tmp_path / layout / "certificate.md").read_text()
        handed = Path(seen.read_text())
        assert handed.parts[-3:] == ("derived", layout, "gqa1-top1-odd")
        ck = Checkpoint(handed)
        assert (ck.layout, ck.experts) == ("hf", experts)
    cfg = Config.from_json(json.loads((DATA_DIR / "checkpoints" / "gqa2-top2" / "config.json").read_text()))
    out = tmp_path / "golden-mine"
    G.generate_from_checkpoint(write_checkpoint(tmp_path / "mine", cfg, seed=5), out, [[1, 2, 3, 4]], 1)
    rc, cert = run_kit(["conformance/test_model.py::test_logits", "--impl", "reference", "--golden", str(out),
                        "--layout", "hf-dense"], tmp_path / "u", monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED and "drop --layout" in failures(cert)


def test_broken_ports_fail_with_clear_messages(tmp_path, monkeypatch, capsys):
    """Wrong shapes and NaN logits FAIL, each saying why; an exec process that speaks garbage stops the session at its
    hello, in one line (more misbehaving exec ports: test_conformance_exec.py)."""
    port = tmp_path / "broken.py"
    port.write_text("import numpy as np\n"
                    "class Shape:\n"
                    "    dtype = 'float32'\n"
                    "    def __init__(self, d): pass\n"
                    "    def logits(self, tokens): return np.zeros((len(tokens), 7))\n"
                    "class NaN(Shape):\n"
                    "    def logits(self, tokens): return np.full((len(tokens), 512), np.nan)\n"
                    "shape = Shape\nnan = NaN\n")
    rc, cert = run_kit(["conformance/test_model.py::test_logits[tiny]", "--impl", f"{port}:shape"], tmp_path / "a", monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED and "returned shape (24, 7), expected [24, 512]" in failures(cert)
    rc, cert = run_kit(["conformance/test_model.py::test_logits[tiny]", "--impl", f"{port}:nan"], tmp_path / "b", monkeypatch)
    assert rc == pytest.ExitCode.TESTS_FAILED and "logits error inf" in failures(cert)
    garbage = tmp_path / "garbage.py"
    garbage.write_text("import sys\nfor line in sys.stdin:\n    print('hello there', flush=True)\n")
    rc, cert = run_kit(["conformance/test_model.py::test_logits[tiny]", "--impl", f"exec:{sys.executable} {garbage}"],
                       tmp_path / "c", monkeypatch)
    assert rc == pytest.ExitCode.USAGE_ERROR and not cert
    assert "wrote 'hello there' on stdout while 'hello' (request 1) waited" in capsys.readouterr().err


def test_unknown_impl_is_a_clear_error(tmp_path, monkeypatch, capsys):
    rc, cert = run_kit(["conformance/test_model.py::test_logits", "--impl", "no_such_pkg.mod:factory"],
                       tmp_path, monkeypatch)
    assert rc == pytest.ExitCode.USAGE_ERROR and not cert
    assert "conformance: --impl 'no_such_pkg.mod:factory': cannot import 'no_such_pkg.mod'" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_optimized_passes(dtype, tmp_path, monkeypatch):
    if importlib.util.find_spec("optimized.adapter") is None:
        pytest.skip("optimized/adapter.py is not there yet")
    rc, cert = run_kit(["conformance/", "-k", "tiny or op_ or golden", "--impl", "optimized",
                        "--dtype", dtype], tmp_path, monkeypatch)
    assert rc == 0, failures(cert)
    assert cert["implementation"]["factory"].endswith("factory_bf16" if dtype == "bfloat16" else "factory")
    assert cert["summary"]["fail"] == 0 and cert["summary"]["pass"] >= 30


def test_unlisted_golden_file_is_refused(golden_copy):
    from golden.format import GoldenError
    (golden_copy / "cases" / "extra.npz").write_bytes(b"not golden")
    with pytest.raises(GoldenError, match="unlisted file cases/extra.npz"):
        verify(golden_copy)


def test_optimized_is_resolved_or_clearly_missing(tmp_path, monkeypatch):
    from conformance.plugin import ImplError, resolve
    if importlib.util.find_spec("optimized.adapter") is None:
        with pytest.raises(ImplError, match="optimized/adapter.py does not exist yet"):
            resolve("optimized", None)
    else:
        assert resolve("optimized", None)[1] == "optimized.adapter:factory"
        assert resolve("optimized", "bfloat16")[1] == "optimized.adapter:factory_bf16"
        assert resolve("optimized", None, "cpu")[1] == "optimized.adapter:factory"
        assert resolve("optimized", "float32", "cuda")[1] == "optimized.adapter:factory_cuda"
        assert resolve("optimized", "bfloat16", "cuda")[1] == "optimized.adapter:factory_cuda_bf16"


@pytest.mark.parametrize("impl", ["reference", "transformers", "my.port:factory", "exec:./port"])
def test_device_cuda_is_refused_where_the_kit_cannot_choose_the_device(impl):
    from conformance.plugin import ImplError, resolve
    with pytest.raises(ImplError, match=f"--device cuda applies to the built-in \\['optimized'\\] only; --impl '{impl}'"):
        resolve(impl, None, "cuda")


def test_headroom_reads_a_folder_or_its_json_and_names_bad_input(tmp_path, capsys):
    from conformance import headroom
    cert = {"implementation": {"name": "port", "dtype": "float32"}, "summary": {"verdict": "CONFORMANT"},
            "checks": [{"measures": [{"check": "logits/c1", "measured": 1e-6, "bound": 4e-6},
                                     {"check": "logits/c1.argmax", "measured": 0, "bound": 1},
                                     {"check": "stages/c1 block.0.attn", "measured": 3e-6, "bound": 4e-6}]}]}
    (tmp_path / "certificate.json").write_text(json.dumps(cert))
    headroom.main([str(tmp_path), str(tmp_path / "certificate.json")])
    out = capsys.readouterr().out
    assert out.count("| logits | 0.25 | 1e-06 | 4e-06 |") == 2 and out.count("| stages | 0.75 |") == 2
    with pytest.raises(SystemExit, match="not a certificate folder or certificate.json"):
        headroom.main([str(tmp_path / "missing")])
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="without a certificate's checks"):
        headroom.main([str(tmp_path / "other.json")])


def test_golden_cli_refuses_prompts_beyond_the_vocabulary(tmp_path):
    """The default (o200k_harmony) prompts on a checkpoint with a small vocabulary: refused before any work,
    saying which id and why; a broken checkpoint is named, not a traceback."""
    from reference.config import Config
    from reference.writer import write_checkpoint
    cfg = Config.from_json(json.loads((DATA_DIR / "checkpoints" / "gqa2-top2" / "config.json").read_text()))
    ckpt = write_checkpoint(tmp_path / "small", cfg, seed=1)
    run = lambda *a: subprocess.run([sys.executable, "-m", "golden", "--checkpoint", *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True)
    proc = run(str(ckpt), "--out", str(tmp_path / "g"))
    assert proc.returncode != 0, proc.stderr
    assert f"beyond this checkpoint's vocabulary ({cfg.vocab_size} ids)" in proc.stderr, proc.stderr
    (ckpt / "config.json").write_text("{")
    proc = run(str(ckpt), "--out", str(tmp_path / "g"), "--tokens", "1,2")
    assert proc.returncode != 0 and "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
