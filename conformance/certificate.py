"""Certificates: what a kit run measured, in JSON and Markdown, and their verification.

`--certificate DIR` writes DIR/certificate.json and DIR/certificate.md. `python -m conformance verify DIR` re-judges
one against the golden data and the contract, trusting none of its verdicts: it recomputes every bound from the
golden data and the recorded dtype class (recorded bounds and `ok` flags are only compared, never used), requires
every check the golden data defines and, for a pass, every measurement the check makes within its bound, checks the
summary and that certificate.md renders certificate.json. The kit pins its golden data (GOLDEN_MANIFEST_SHA256);
a certificate on other golden data verifies only marked as such. A certificate is not a signature: anyone can write
consistent JSON; `verify --rerun --impl NAME` re-runs the kit on the port and compares (SPEC.md section 6).
Malformed JSON is answered with one line naming the field (Malformed), never a traceback.
"""
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from conformance import GOLDEN_MANIFEST_SHA256, KIT_VERSION, spec
from golden import format as gformat

REPO = Path(__file__).resolve().parent.parent
STATUSES = ("pass", "fail", "not_supported", "skipped")
UNPINNED = "golden data not the kit's pinned data"


def git_hash() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "conformance", "golden",
                                "reference"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def summarize(checks: list[dict]) -> dict:
    counts = {s: 0 for s in STATUSES}
    for c in checks:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    counts["verdict"] = "CONFORMANT" if counts["fail"] == 0 and counts["pass"] > 0 else "NOT CONFORMANT"
    return counts


def build(kit) -> dict:
    g = kit.golden
    try:
        manifest = g.manifest
        golden = {"path": str(g.root), "format_version": manifest["format_version"],
                  "manifest_sha256": g.manifest_sha256, "files": manifest["files"], "kind": manifest.get("kind")}
    except gformat.GoldenError as e:  # the run failed on untrusted golden data; the certificate says so
        golden = {"path": str(g.root), "format_version": None, "manifest_sha256": None, "files": {},
                  "kind": None, "error": str(e)}
    golden["pinned"] = golden["manifest_sha256"] == GOLDEN_MANIFEST_SHA256
    return {
        "kit": {"version": KIT_VERSION, "git": git_hash(), "spec": "conformance/SPEC.md",
                "factor": spec.FACTOR, "floor": spec.FLOOR},
        "golden": golden,
        "implementation": kit.identity,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checks": kit.results,
        "summary": summarize(kit.results),
        "verify": "python -m conformance verify DIR",
    }


def render_md(cert: dict) -> str:
    imp, s, g = cert["implementation"], cert["summary"], cert["golden"]
    mark = "" if g.get("pinned") else f" ({UNPINNED})"
    lines = [f"# gpt-oss conformance certificate: {s['verdict']}{mark}", "",
             f"- implementation: `{imp.get('name')}` (`--impl {imp.get('impl')}`, factory `{imp.get('factory')}`)",
             f"- dtype (bounds): {imp.get('dtype')}; device: {imp.get('device')}; "
             f"capabilities: {', '.join(imp.get('capabilities', []))}; "
             f"checkpoints handed in the {imp.get('checkpoint_layout', 'original')} layout",
             f"- kit {cert['kit']['version']} at git {cert['kit']['git']}; golden format "
             f"{g['format_version']}, manifest sha256 `{g['manifest_sha256']}`"
             + ("" if g.get("pinned") else f": {UNPINNED} (`{g['path']}`)"),
             f"- {s['pass']} pass, {s['fail']} fail, {s['not_supported']} not supported, {s['skipped']} skipped; "
             f"{cert['date']}", f"- verify: `{cert['verify']}` (consistency with the golden data; `--rerun --impl "
                                f"NAME` re-runs the port)", "",
             "| check | status | measured | bound | note |", "|---|---|---|---|---|"]
    for c in cert["checks"]:
        note = c["message"].replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| **{c['check']}** | **{c['status']}** | | | {note} |")
        for m in c["measures"]:
            meas, bnd = m.get("measured"), m.get("bound")
            if meas is None:
                continue
            lines.append(f"| {m.get('check', '')} | {'ok' if m.get('ok') else 'over'} | {meas:.3g} | "
                         f"{'' if bnd is None else f'{bnd:.3g}'} | |")
    return "\n".join(lines) + "\n"


def write(kit, folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cert = build(kit)
    (folder / "certificate.json").write_text(json.dumps(cert, indent=1) + "\n")
    (folder / "certificate.md").write_text(render_md(cert))
    return folder


# -- reading: a malformed certificate is one line naming the field ---------------------------------------------
class Malformed(ValueError):
    """certificate.json cannot be read as a certificate; the message names the field."""


_TYPES = {"an object": lambda v: isinstance(v, dict), "a list": lambda v: isinstance(v, list),
          "a string": lambda v: isinstance(v, str), "true or false": lambda v: isinstance(v, bool),
          "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}


def _shown(v) -> str:
    if isinstance(v, (dict, list)):
        return "an object" if isinstance(v, dict) else "a list"
    return json.dumps(v) if v is None or isinstance(v, bool) else repr(v)


def _typed(v, kind: str, path: str):
    base, nullable = kind.removesuffix(" or null"), kind.endswith(" or null")
    if not ((nullable and v is None) or _TYPES[base](v)):
        raise Malformed(f"{path}: expected {kind}, got {_shown(v)}")
    return v


def _field(obj: dict, key: str, where: str, kind: str, optional: bool = False):
    path = f"{where}.{key}" if where else key
    if key not in obj:
        if optional:
            return None
        raise Malformed(f"{path}: missing")
    return _typed(obj[key], kind, path)


def _validate(cert) -> None:
    """Every field verify and render_md read, with its JSON type."""
    _typed(cert, "an object", "certificate.json")
    kit = _field(cert, "kit", "", "an object")
    for key, kind in (("version", "a string"), ("git", "a string"), ("factor", "a number"), ("floor", "an object")):
        _field(kit, key, "kit", kind)
    for k, v in kit["floor"].items():
        _typed(v, "a number", f"kit.floor.{k}")
    g = _field(cert, "golden", "", "an object")
    for key, kind in (("path", "a string"), ("manifest_sha256", "a string or null"), ("files", "an object"),
                      ("format_version", "a number or null"), ("pinned", "true or false")):
        _field(g, key, "golden", kind)
    _field(g, "error", "golden", "a string", optional=True)
    for k, v in g["files"].items():
        _typed(v, "a string", f"golden.files[{k!r}]")
    imp = _field(cert, "implementation", "", "an object")
    for key in ("dtype", "declared_dtype", "name", "impl", "factory", "device", "checkpoint_layout"):
        _field(imp, key, "implementation", "a string or null", optional=True)
    for i, cap in enumerate(_field(imp, "capabilities", "implementation", "a list", optional=True) or []):
        _typed(cap, "a string", f"implementation.capabilities[{i}]")
    for key in ("date", "verify"):
        _field(cert, key, "", "a string")
    for i, c in enumerate(_field(cert, "checks", "", "a list")):
        where = f"checks[{i}]"
        _typed(c, "an object", where)
        _field(c, "check", where, "a string")
        if _field(c, "status", where, "a string") not in STATUSES:
            raise Malformed(f"{where}.status: expected one of {', '.join(STATUSES)}, got {c['status']!r}")
        _field(c, "message", where, "a string")
        for j, m in enumerate(_field(c, "measures", where, "a list")):
            mw = f"{where}.measures[{j}]"
            _typed(m, "an object", mw)
            _field(m, "check", mw, "a string")
            _field(m, "measured", mw, "a number", optional=True)
            _field(m, "bound", mw, "a number", optional=True)
            _field(m, "ok", mw, "true or false", optional=True)
    _field(cert, "summary", "", "an object")


def load(folder) -> dict:
    """certificate.json of a folder, validated; Malformed (one line) otherwise."""
    path = Path(folder) / "certificate.json"
    try:
        cert = json.loads(path.read_text())
    except OSError as e:
        raise Malformed(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Malformed(f"{path}: not valid JSON ({e})") from None
    _validate(cert)
    return cert


# -- the checks the golden data defines, and what each measures ------------------------------------------------
@dataclasses.dataclass
class Expected:
    capability: str | None  # the port capability the check needs; None: every port (golden integrity)
    measures: dict[str, Callable[[str], float]]  # measurement name -> its bound for a dtype class
    required: bool = False  # required of any certificate (SPEC.md section 3)
    some: bool = False  # a pass needs at least one of the measures (stages: the port exposes a subset)


OP_CAPABILITY = {"mxfp4": "op_mxfp4_decode", "rms_norm": "op_rms_norm", "swiglu": "op_swiglu", "route": "op_route",
                 "rope": "op_rope_cos_sin", "attention": "op_attention"}
# conformance/test_text.py: test function -> (its key in text/vectors.json, capability, measurement name)
TEXT = {"test_tokenizer": ("tokenizer", "tokenize", "tokenizer"),
        "test_tokenizer_special": ("tokenizer_special", "tokenize_special", "tokenizer_special"),
        "test_detokenize": ("detokenize", "detokenize", "detokenize"),
        "test_harmony_render": ("harmony", "render", "harmony_render"),
        "test_harmony_parse": ("harmony_parse", "parse", "harmony_parse"),
        "test_harmony_parse_stream": ("harmony_stream", "parse_stream", "harmony_stream"),
        "test_harmony_render_rejects_unrenderable": ("harmony_render_errors", "render", "harmony_render_rejects"),
        "test_harmony_parse_rejects_malformed": ("harmony_parse_errors", "parse", "harmony_parse_rejects")}
GOLDEN_CHECK = "test_golden.py::test_golden_manifest"


def _zero(dtype: str) -> float:  # counts (wrong values, wrong ids, argmax flips, differing vectors): none allowed
    return 0.0


def _logit_measures(data: dict, *names: str) -> dict:
    """compare_logits' three sub-measurements under each name (a prefill of decode/*, a row of batch/*)."""
    out = {}
    for name in names:
        out |= {name: lambda dt: spec.case_bound(data, dt, "logits"),
                f"{name}.logprob": lambda dt: spec.case_bound(data, dt, "logprob"), f"{name}.argmax": _zero}
    return out


def contract(root: Path, manifest: dict) -> tuple[dict[str, Expected], set[str]]:
    """The checks a full kit run on this golden data makes ({name: Expected}), and the test functions it may
    report as skipped because the golden data has no vectors for them (a user's golden data has no ops, no text)."""
    files = manifest["files"]
    want: dict[str, Expected] = {GOLDEN_CHECK: Expected(None, {}, required=True)}
    for rel in sorted(files):
        if not (rel.startswith("cases/") and rel.endswith(".npz")):
            continue
        case = Path(rel).stem
        data = gformat.load_npz(root / rel)
        T = len(data["tokens"])
        want[f"test_model.py::test_logits[{case}]"] = Expected("logits", _logit_measures(data, f"logits/{case}"), True)
        want[f"test_model.py::test_greedy[{case}]"] = Expected("logits", _logit_measures(data, f"greedy/{case}"))
        want[f"test_model.py::test_decode[{case}]"] = Expected("decode_logits", _logit_measures(
            data, *(f"decode/{case}.prefill{p}" for p in spec.decode_prefills(T))))
        want[f"test_model.py::test_batch[{case}]"] = Expected("batch_logits", _logit_measures(
            data, *(f"batch/{case}.row{i}" for i in range(len(spec.batch_lengths(T))))))
        stages = [k[len("stage."):] for k in data if k.startswith("stage.")
                  and not k.endswith(("expert_ids", "expert_weights", "router_logits"))]
        want[f"test_model.py::test_stages[{case}]"] = Expected("intermediates", {
            f"stages/{case}.{s}": (lambda dt, s=s, data=data: spec.case_bound(data, dt, s)) for s in stages}, some=True)
    may_skip = set()
    for op, capability in OP_CAPABILITY.items():
        rel = f"ops/{op}.npz"
        if rel not in files:
            may_skip.add(f"test_ops.py::test_op_{op}")
            continue
        vectors = gformat.load_npz(root / rel)
        for c in sorted({k.split(".")[0] for k in vectors}):
            g = {k[len(c) + 1:]: v for k, v in vectors.items() if k.startswith(c + ".")}
            bound = lambda dt, g=g: spec.op_bound(g, dt)  # noqa: E731
            measures = {"mxfp4": {f"mxfp4/{c}": _zero}, "rope": {f"rope/{c}": lambda dt: 1.0},
                        "route": {f"route/{c}.ids": _zero, f"route/{c}.weights": bound}}.get(op, {f"{op}/{c}": bound})
            want[f"test_ops.py::test_op_{op}[{c}]"] = Expected(capability, measures)
    vectors = json.loads((root / "text" / "vectors.json").read_text()) if "text/vectors.json" in files else {}
    for fn, (key, capability, name) in TEXT.items():
        if vectors.get(key):
            want[f"test_text.py::{fn}"] = Expected(capability, {name: _zero})
        else:
            may_skip.add(f"test_text.py::{fn}")
    return want, may_skip


# -- verification ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Report:
    problems: list[str]
    notes: list[str]
    verdict: str = ""
    dtype: str | None = None
    malformed: str | None = None


def _golden(cert: dict, problems: list, notes: list) -> tuple[Path | None, dict | None]:
    """The golden folder the certificate stands on, verified: this kit's own golden/data when it names the pinned
    manifest (wherever it was run), else the folder it names (marked: not the kit's pinned data)."""
    g = cert["golden"]
    recorded = g["manifest_sha256"]
    if recorded is None:
        notes.append(f"the run's golden data did not verify ({g.get('error', 'no reason recorded')}): no check can "
                     f"pass")
        return None, None
    pinned = recorded == GOLDEN_MANIFEST_SHA256
    if g["pinned"] != pinned:
        problems.append(f"golden.pinned is {json.dumps(g['pinned'])}, but its manifest sha256 {recorded} is "
                        + ("" if pinned else "not ") + f"the one kit {KIT_VERSION} pins ({GOLDEN_MANIFEST_SHA256})"
                        + ("" if pinned else f": {UNPINNED}"))
    root = gformat.DATA_DIR if pinned else Path(g["path"])
    try:
        manifest = gformat.verify(root)
    except gformat.GoldenError as e:
        problems.append(f"golden data {root} does not verify: {e}")
        return None, None
    have = gformat.manifest_hash(root)
    if have != recorded:
        problems.append(f"golden data {root} has manifest sha256 {have}, the certificate names {recorded}"
                        + (" (this kit's own golden/data is not the data it pins: the kit was changed)" if pinned
                           else ""))
    if manifest["files"] != g["files"]:
        problems.append("the golden files' hashes differ from those the certificate names")
    if pinned:
        notes.append(f"golden data: the kit's pinned data (manifest sha256 {recorded})")
    else:
        notes.append(f"{UNPINNED}: {root} (manifest sha256 {recorded}; kit {KIT_VERSION} pins "
                     f"{GOLDEN_MANIFEST_SHA256}). The certificate holds against that folder only, whose baselines set "
                     f"its bounds")
    return root, manifest


def _judge(c: dict, exp: Expected, dtype: str | None, caps: list, golden_sha: str | None) -> list[str]:
    """Problems of one recorded check against what the contract says it measures (bounds recomputed)."""
    name, status, problems = c["check"], c["status"], []
    if status == "skipped":
        return [f"{name}: recorded skipped, but the golden data has its vectors (skipped is for checks without)"]
    if status == "not_supported":
        if exp.capability in (None, "logits"):
            return [f"{name}: recorded not_supported, but this check applies to every port"]
        if exp.capability in caps:
            return [f"{name}: recorded not_supported, but implementation.capabilities lists {exp.capability}"]
        return []
    served = exp.capability == "logits" and "top_logprobs" in caps  # a server stands in for logits by logprobs
    if status == "pass" and exp.capability and exp.capability not in caps and not served:
        problems.append(f"{name}: recorded pass, but implementation.capabilities does not list {exp.capability}")
    if status == "pass" and name == GOLDEN_CHECK and not any(
            m["check"] == "golden" and m.get("manifest_sha256") == golden_sha for m in c["measures"]):
        problems.append(f"{name}: recorded pass without the golden manifest sha256 the certificate names")
    seen = set()
    for m in c["measures"]:
        key = m["check"].split(" ")[0]
        if name == GOLDEN_CHECK and key == "golden":
            continue
        if key not in exp.measures:
            problems.append(f"{name}: measurement {m['check']!r} is not one this check makes")
            continue
        seen.add(key)
        if dtype is None:
            continue
        want = exp.measures[key](dtype)
        bound = m.get("bound")
        if bound is not None and not abs(bound - want) <= 1e-9 * max(1.0, abs(want)):
            problems.append(f"{name}: {m['check']} bound {bound!r} is not the contract's {want!r} for {dtype}")
        measured = m.get("measured")
        if status == "pass" and not (measured is not None and measured <= want):
            shown = "no value" if measured is None else f"{measured:.3g}"
            note = f"; recorded ok={json.dumps(m['ok']).replace('true', 'True').replace('false', 'False')}" \
                if "ok" in m else ""
            problems.append(f"{name}: recorded pass, but {m['check']} measured {shown} > bound {want:.3g} (the "
                            f"contract's for {dtype}{note})")
    if status == "pass" and exp.measures:
        missing = [k for k in exp.measures if k not in seen]
        if exp.some and len(missing) == len(exp.measures):
            problems.append(f"{name}: recorded pass without its measurements (at least one of "
                            f"{', '.join(exp.measures)})")
            missing = []
        if exp.capability == "logits" and "logits" not in caps and "top_logprobs" in caps:
            missing = [k for k in missing if k.endswith((".logprob", ".argmax"))]  # a server: log-probabilities only
        if missing and not exp.some:
            problems.append(f"{name}: recorded pass without its measurements: {', '.join(missing)} missing")
    return problems


def examine(folder) -> Report:
    """Verify a certificate folder: problems (empty: it verifies), notes to say beside the verdict."""
    folder = Path(folder)
    try:
        cert = load(folder)
    except Malformed as e:
        return Report([str(e)], [], malformed=str(e))
    problems, notes = [], []
    kit, imp = cert["kit"], cert["implementation"]
    if kit["version"] != KIT_VERSION:
        problems.append(f"written by kit {kit['version']}; this is kit {KIT_VERSION}, whose pinned golden data and "
                        f"contract may differ: verify with kit {kit['version']}")
    if kit["factor"] != spec.FACTOR or kit["floor"] != spec.FLOOR:
        problems.append(f"the certificate's FACTOR/FLOOR {kit['factor']}/{kit['floor']} differ from this "
                        f"kit's {spec.FACTOR}/{spec.FLOOR} (verify with the kit version that wrote it)")
    if kit["git"].endswith("+dirty"):
        notes.append(f"the kit that wrote it had local changes in conformance/, golden/ or reference/ "
                     f"(git {kit['git']})")
    dtype = imp.get("dtype")
    if dtype is not None and dtype not in spec.KNOWN_CLASSES:
        problems.append(f"implementation.dtype {dtype!r} is not a precision class of this kit "
                        f"({', '.join(spec.KNOWN_CLASSES)}): its bounds cannot be recomputed")
        dtype = None
    elif dtype is not None:
        try:
            declared = (spec.precision_class(imp["declared_dtype"], imp.get("declared_activations"))
                        if imp.get("declared_dtype") else None)
        except ValueError:
            declared = None
        if declared != dtype:
            said = imp.get("declared_dtype") if not imp.get("declared_activations") else \
                f"{imp.get('declared_dtype')}+{imp.get('declared_activations')}"
            notes.append(f"bounds of the {dtype} class; the port declares {said!r}")
    caps = imp.get("capabilities") or []
    if "top_logprobs" in caps and "logits" not in caps:
        notes.append("judged by top-k log-probabilities (a server): the logits error itself is not measured")
    root, manifest = _golden(cert, problems, notes)
    checks = cert["checks"]
    if manifest is None:  # nothing to judge a pass against: none may be recorded
        passed = [c["check"] for c in checks if c["status"] == "pass"]
        if passed:
            problems.append(f"{len(passed)} checks recorded pass, but no golden data verifies: "
                            + ", ".join(passed[:6]) + (f" and {len(passed) - 6} more" if len(passed) > 6 else ""))
    else:
        want, may_skip = contract(root, manifest)
        if dtype is None:  # a pass that measures something cannot be judged without bounds
            passed = [c["check"] for c in checks if c["status"] == "pass" and want.get(c["check"]) is not None
                      and want[c["check"]].measures]
            if passed:
                problems.append(f"{len(passed)} checks recorded pass, but no dtype class gives their bounds: "
                                + ", ".join(passed[:6]) + (f" and {len(passed) - 6} more" if len(passed) > 6 else ""))
        names = [c["check"] for c in checks]
        for n in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{n}: recorded {names.count(n)} times")
        for c in checks:
            if c["check"] in want:
                problems += _judge(c, want[c["check"]], dtype, caps, cert["golden"]["manifest_sha256"])
            elif c["check"].split("[")[0] in may_skip:
                if c["status"] != "skipped":
                    problems.append(f"{c['check']}: recorded {c['status']}, but the golden data has no vectors for it")
            else:
                problems.append(f"{c['check']}: not a check this kit makes on this golden data")
        absent = [n for n in want if n not in names]
        problems += [f"required check {n} is missing" for n in absent if want[n].required]
        optional = [n for n in absent if not want[n].required]
        if optional:
            problems.append(f"{len(optional)} checks the golden data defines are missing (a certificate covers the "
                            f"whole kit, `pytest conformance/`): " + ", ".join(optional[:12])
                            + (f" and {len(optional) - 12} more" if len(optional) > 12 else ""))
    summary = summarize(checks)
    if summary != cert["summary"]:
        problems.append(f"the summary does not match the checks (they give {summary})")
    md = folder / "certificate.md"
    if not md.is_file() or md.read_text() != render_md(cert):
        problems.append("certificate.md is not the rendering of certificate.json")
    return Report(problems, notes, summary["verdict"], dtype)


def verify(folder) -> list[str]:
    """Problems with a certificate (empty: it verifies)."""
    return examine(folder).problems


# -- --rerun: the port itself, not the JSON --------------------------------------------------------------------
def rerun(folder, impl: str, dtype: str | None = None, device: str | None = None) -> tuple[list[str], str]:
    """Run the whole kit on --impl against the certificate's golden data, layout and dtype class (or `dtype`);
    return (one line per difference from the certificate, a description of the run)."""
    cert = load(folder)
    g, imp = cert["golden"], cert["implementation"]
    dtype = dtype or imp.get("dtype") or "bfloat16"
    with tempfile.TemporaryDirectory(prefix="conformance-rerun-") as tmp:
        args = [sys.executable, "-m", "pytest", str(REPO / "conformance"), "--impl", impl, "--dtype", dtype,
                "--layout", imp.get("checkpoint_layout") or "original", "--certificate", tmp, "-q", "--no-header",
                "-p", "no:cacheprovider"]
        if not g["pinned"]:
            args += ["--golden", g["path"]]
        if device:
            args += ["--device", device]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        run = subprocess.run(args, capture_output=True, text=True, env=env)
        try:
            new = load(tmp)
        except Malformed:
            tail = " / ".join((run.stdout + run.stderr).strip().splitlines()[-3:])
            return [f"the re-run wrote no certificate (pytest exit {run.returncode}): {tail}"], " ".join(args[2:])
    lines = []
    for key in ("declared_dtype", "dtype"):
        if imp.get(key) != new["implementation"].get(key):
            lines.append(f"implementation.{key}: certificate: {imp.get(key)!r}, re-run: "
                         f"{new['implementation'].get(key)!r}")
    a, b = set(imp.get("capabilities") or []), set(new["implementation"].get("capabilities") or [])
    if a != b:
        lines.append(f"implementation.capabilities: only the certificate lists {sorted(a - b)}, only the re-run's "
                     f"port has {sorted(b - a)}")
    old = {c["check"]: c for c in cert["checks"]}
    now = {c["check"]: c for c in new["checks"]}
    for name in [*now, *(n for n in old if n not in now)]:
        x, y = old.get(name), now.get(name)
        if x is None:
            lines.append(f"{name}: not in the certificate; re-run: {y['status']}")
        elif y is None:
            lines.append(f"{name}: certificate: {x['status']}; not in the re-run")
        elif x["status"] != y["status"]:
            why = y["message"].replace("\n", " ")[:200]
            lines.append(f"{name}: certificate: {x['status']}, re-run: {y['status']}" + (f" ({why})" if why else ""))
    return lines, f"--impl {impl} --dtype {dtype}, {len(now)} checks"
