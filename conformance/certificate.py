"""Certificates: what a kit run measured, in JSON and Markdown, and their verification.

`--certificate DIR` writes DIR/certificate.json and DIR/certificate.md; `python -m conformance verify DIR`
re-checks one against the golden data it names: the golden folder verifies and has the recorded manifest
hash, every check's status agrees with its measurement and bound, every required check is present,
the summary adds up, and certificate.md is the rendering of certificate.json.
"""
import datetime
import json
import platform
import subprocess
from pathlib import Path

from conformance import KIT_VERSION, spec
from golden import format as gformat

REPO = Path(__file__).resolve().parent.parent


def git_hash() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "conformance", "golden",
                                "reference"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def summarize(checks: list[dict]) -> dict:
    counts = {s: 0 for s in ("pass", "fail", "not_supported", "skipped")}
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
    imp, s = cert["implementation"], cert["summary"]
    lines = [f"# gpt-oss conformance certificate: {s['verdict']}", "",
             f"- implementation: `{imp.get('name')}` (`--impl {imp.get('impl')}`, factory `{imp.get('factory')}`)",
             f"- dtype (bounds): {imp.get('dtype')}; device: {imp.get('device')}; "
             f"capabilities: {', '.join(imp.get('capabilities', []))}; "
             f"checkpoints handed in the {imp.get('checkpoint_layout', 'original')} layout",
             f"- kit {cert['kit']['version']} at git {cert['kit']['git']}; golden format "
             f"{cert['golden']['format_version']}, manifest sha256 `{cert['golden']['manifest_sha256']}`",
             f"- {s['pass']} pass, {s['fail']} fail, {s['not_supported']} not supported, {s['skipped']} skipped; "
             f"{cert['date']}", f"- verify: `{cert['verify']}`", "",
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


def expected_bound(check: str, root: Path, dtype: str) -> float | None:
    """The bound the contract gives a named measurement, recomputed from the golden data (None: not derivable
    from a name, e.g. counts whose bound is 0 by definition are checked elsewhere)."""
    name = check.split(" ")[0]
    head, _, rest = name.partition("/")
    base = lambda data, key: {dt: float(data[f"{key}{dt}" if key.endswith(".") else f"{key}.{dt}"])  # noqa: E731
                              for dt in ("float32", "bfloat16")}
    if head in ("rms_norm", "swiglu", "attention", "route") and rest:
        case = rest.split(".")[0]
        if head == "route" and not rest.endswith(".weights"):
            return None
        data = gformat.load_npz(root / "ops" / f"{head}.npz")
        return spec.bound(dtype, base(data, f"{case}.baseline"))
    if head == "rope":
        return 1.0
    if head in ("logits", "greedy", "decode", "batch", "stages") and rest:
        case_name = rest.split(".")[0]
        f = root / "cases" / f"{case_name}.npz"
        if not f.is_file():
            return None
        data = gformat.load_npz(f)
        if rest.endswith(".argmax"):
            return 0.0
        if head == "stages":
            stage = rest[len(case_name) + 1:]
            key = f"baseline.float32.{stage}"
            return spec.bound(dtype, {dt: float(data[f"baseline.{dt}.{stage}"]) for dt in ("float32", "bfloat16")}) \
                if key in data else None
        what = "logprob" if rest.endswith(".logprob") else "logits"
        return spec.bound(dtype, {dt: float(data[f"baseline.{dt}.{what}"]) for dt in ("float32", "bfloat16")})
    return None


def verify(folder) -> list[str]:
    """Problems with a certificate (empty: it verifies)."""
    folder = Path(folder)
    problems = []
    try:
        cert = json.loads((folder / "certificate.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [f"cannot read {folder / 'certificate.json'}: {e}"]
    for key in ("kit", "golden", "implementation", "checks", "summary"):
        if key not in cert:
            problems.append(f"certificate.json has no {key!r}")
    if problems:
        return problems
    try:
        manifest = gformat.verify(cert["golden"]["path"])
        if gformat.manifest_hash(Path(cert["golden"]["path"])) != cert["golden"]["manifest_sha256"]:
            problems.append("the golden folder's manifest hash differs from the one the certificate names")
        if manifest["files"] != cert["golden"]["files"]:
            problems.append("the golden files' hashes differ from those the certificate names")
    except gformat.GoldenError as e:
        problems.append(f"golden data named by the certificate does not verify: {e}")
        manifest = None
    kit = cert["kit"]
    if kit.get("factor") != spec.FACTOR or kit.get("floor") != spec.FLOOR:
        problems.append(f"the certificate's FACTOR/FLOOR {kit.get('factor')}/{kit.get('floor')} differ from this "
                        f"kit's {spec.FACTOR}/{spec.FLOOR} (verify with the kit version that wrote it)")
    dtype = cert["implementation"].get("dtype")
    root = Path(cert["golden"]["path"])
    for c in cert["checks"]:
        for m in c["measures"]:
            if manifest is not None and dtype in spec.FLOOR and m.get("bound") is not None and m.get("check"):
                want = expected_bound(m["check"], root, dtype)
                if want is not None and abs(want - m["bound"]) > 1e-9 * max(1.0, abs(want)):
                    problems.append(f"{c['check']}: {m['check']} bound {m['bound']!r} is not the contract's "
                                    f"{want!r} for {dtype}")
            if "measured" in m and "bound" in m and "ok" in m:
                ok = m["measured"] is not None and m["measured"] <= m["bound"]
                if ok != m["ok"]:
                    problems.append(f"{c['check']}: {m.get('check')} measured {m['measured']} vs bound {m['bound']} "
                                    f"but recorded ok={m['ok']}")
                if c["status"] == "pass" and not ok:
                    problems.append(f"{c['check']}: status pass but {m.get('check')} exceeds its bound")
    if summarize(cert["checks"]) != cert["summary"]:
        problems.append("the summary does not match the checks")
    if manifest is not None:
        names = [c["check"] for c in cert["checks"]]
        cases = sorted(Path(rel).stem for rel in manifest["files"] if rel.startswith("cases/"))
        want = ["test_golden.py::test_golden_manifest"] + [f"test_model.py::test_logits[{c}]" for c in cases]
        for w in want:
            if not any(n.endswith(w.split("::", 1)[1]) for n in names):
                problems.append(f"required check {w} is missing")
    md = folder / "certificate.md"
    if not md.is_file() or md.read_text() != render_md(cert):
        problems.append("certificate.md is not the rendering of certificate.json")
    return problems
