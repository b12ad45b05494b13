"""pytest plumbing of the kit: options, parametrization from the golden data, result recording, certificate.

  pytest conformance/ --impl reference|optimized|transformers|mlx|keras-hub|pkg.module:factory|file.py:factory|exec:CMD
                      [--dtype float32|bfloat16|float64] [--golden DIR|real-20b|real-120b] [--certificate DIR]
                      [--exec-timeout SECONDS] [--exec-start-timeout SECONDS]

An --impl that cannot be loaded, an exec: port that does not start and answer hello, a --golden folder that does
not exist or has no manifest: the session stops before any check, in one line (pytest's usage error, exit code 4).
"""
import pytest

from conformance import certificate, plugin, spec
from conformance.session import Kit, ensure_tier
from golden import format as gformat
from golden.derived import LAYOUTS

KIT = pytest.StashKey[Kit]()


def pytest_addoption(parser):
    g = parser.getgroup("conformance", "gpt-oss conformance kit")
    g.addoption("--impl", default="reference",
                help="implementation under test: reference, optimized, transformers, mlx, keras-hub, "
                     "package.module:factory, path/to/file.py:factory or exec:COMMAND (default: reference)")
    g.addoption("--dtype", default=None,
                help="the dtype whose bounds apply (float64, float32, bfloat16); default: the impl's dtype "
                     "attribute, else bfloat16. With --impl optimized, bfloat16 selects factory_bf16")
    g.addoption("--activations", default=None, choices=["int8", "fp8"],
                help="the port's kernels round activations before the MXFP4 expert matmuls: int8 (llama.cpp's "
                     "Q8_0 on CPU) or fp8 (MXFP8 E4M3); bounds of that precision class (SPEC.md section 2); "
                     "default: the impl's activations attribute, else none")
    g.addoption("--device", default=None, choices=["cpu", "cuda"],
                help="device of a built-in impl (--impl optimized: cpu or cuda); a port of your own chooses its "
                     "device in its factory")
    g.addoption("--golden", default=None, help="golden data folder (default: golden/data; or one written by "
                                               "python -m golden --checkpoint), or real-20b / real-120b: the "
                                               "real-shape tier, generated on first use into a cache folder")
    g.addoption("--layout", default=None, choices=list(LAYOUTS),
                help="the form of the golden checkpoints the port is handed: original (OpenAI's release layout, "
                     "default), hf (HF names, q/k/v split, MXFP4 experts; the real-shape tier's default) or "
                     "hf-dense (HF layout, experts dense bf16: how a fine-tune is saved); the same model, so the "
                     "same golden logits")
    g.addoption("--certificate", default=None, help="write certificate.json and certificate.md to this folder")
    g.addoption("--exec-timeout", type=float, default=600, metavar="SECONDS",
                help="exec: ports: the longest wait for one answer (default 600 s, room for a big checkpoint on a "
                     "slow machine); a port that takes longer is stopped, and started again for the next check")
    g.addoption("--exec-start-timeout", type=float, default=60, metavar="SECONDS",
                help="exec: ports: the longest wait for the answer to hello once started (default 60 s)")


def pytest_configure(config):
    if config.getoption("--impl", default=None) is None:
        return
    kit = config.stash[KIT] = Kit(config)
    if config.option.help:
        return
    try:
        _preflight(kit, config)
    except (plugin.ImplError, gformat.GoldenError) as e:
        kit.close()
        raise pytest.UsageError(f"conformance: {e}") from None


def _preflight(kit, config):
    """What would fail every check, checked once: the golden folder, the --impl, an exec: port's start."""
    root = config.getoption("--golden") or kit.golden.root
    if kit.tier:
        ensure_tier(kit)  # first use: generates it (minutes); later: sha256 of every file, once per run
    if not kit.golden.root.is_dir():
        raise gformat.GoldenError(f"--golden {root}: no such folder")
    if not (kit.golden.root / gformat.MANIFEST).is_file():
        raise gformat.GoldenError(f"--golden {root}: no {gformat.MANIFEST} (golden data is written by "
                                  f"python -m golden)")
    if kit.dtype_opt or kit.activations_opt:
        try:
            spec.precision_class(kit.dtype_opt or "bfloat16", kit.activations_opt)
        except ValueError as e:
            raise plugin.ImplError(f"--dtype/--activations: {e}") from None
    factory = kit.factory  # resolves --impl: ImplError names the problem
    if isinstance(factory, plugin.ExecFactory):
        factory.start(config.getoption("--exec-timeout"), config.getoption("--exec-start-timeout"))


def pytest_unconfigure(config):
    kit = config.stash.get(KIT, None)
    if kit is not None:
        kit.close()  # after sessionfinish, or in its place when the session never started


def kit_of(config) -> Kit:
    return config.stash[KIT]


def pytest_report_header(config):
    kit = kit_of(config)
    return [f"conformance: --impl {kit.impl_name}, golden {kit.golden.root}"
            + (f", --dtype {kit.dtype_opt}" if kit.dtype_opt else "")
            + (f", --activations {kit.activations_opt}" if kit.activations_opt else "")]


def pytest_generate_tests(metafunc):
    kit = kit_of(metafunc.config)
    listing = kit.golden.listing()
    if "op_case" in metafunc.fixturenames:
        op = metafunc.function.__name__.removeprefix("test_op_")
        metafunc.parametrize("op_case", listing["ops"].get(op, []))
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", listing["cases"])


@pytest.fixture(scope="session")
def kit(request) -> Kit:
    k = kit_of(request.config)
    k.golden.manifest  # noqa: B018 - verify the golden data before any check uses it (fails every test)
    return k


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(plugin.ImplError):
        rep.longrepr = call.excinfo.exconly()  # the port or the protocol, named: no traceback through the kit
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        kit = kit_of(item.config)
        measures = [m for k, m in item.user_properties if k == "measure"]
        if rep.skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            reason = reason.removeprefix("Skipped: ")
            status = "not_supported" if reason.startswith("not supported") else "skipped"
            message = reason
        else:
            status = "pass" if rep.passed else "fail"
            message = "" if rep.passed else _short(rep)
        path, name = item.nodeid.split("::", 1)
        kit.results.append({"check": f"{path.rsplit('/', 1)[-1]}::{name}", "status": status, "message": message,
                            "measures": measures})


def _short(rep) -> str:
    text = str(rep.longrepr)
    if hasattr(rep.longrepr, "reprcrash") and rep.longrepr.reprcrash is not None:
        text = rep.longrepr.reprcrash.message
    return text.strip()[:2000]


def pytest_terminal_summary(terminalreporter, config):
    kit = config.stash.get(KIT, None)
    if kit is None or not kit.results:
        return
    counts = {}
    for r in kit.results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    ident = kit.identity
    terminalreporter.write_line(
        f"conformance: {ident.get('name', kit.impl_name)} dtype={ident.get('dtype')} "
        + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if ident.get("dtype_note"):
        terminalreporter.write_line(f"conformance: {ident['dtype_note']}")


def pytest_sessionfinish(session, exitstatus):
    kit = session.config.stash.get(KIT, None)
    if kit is None:
        return
    try:
        if kit.certificate and kit.results:
            certificate.write(kit, kit.certificate)
    finally:
        kit.close()
