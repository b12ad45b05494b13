"""The real-shape golden tier: gpt-oss-20b's and gpt-oss-120b's per-layer shapes, two layers, made on demand.

What this is: golden data on which a GPU engine's kernels take their real paths (head_dim 64, hidden 2880, 64 query
and 8 kv heads, window 128, vocabulary 201088, the release's YaRN) and an HF-style loader finds what it reads:
`checkpoint/` is the release's root (config.json with `quantization_config`, model.safetensors with MXFP4 experts,
tokenizer.json, tokenizer_config.json, generation_config.json; golden/hf_files.py). Layer 0 is windowed, layer 1
full. The cases are harmony-rendered conversations (63 and 180 tokens: the second crosses the window) with a
greedy continuation, computed by the float64 reference like every golden case (golden/generate.py:model_case).
What it is not: committed. `pytest conformance/ --golden real-20b` (conformance/session.py) calls `ensure`, which
writes the tier once into a cache folder ($GPT_OSS_KIT_CACHE/NAME, else ~/.cache/gpt-oss-kit/NAME) and verifies
it by sha256 on every later use.

What pins it (golden/real_pins.json, written by `python -m golden.real NAME --pin`): the sha256 of every checkpoint
file (weights drawn by reference/writer.py: numpy PCG64 seeded from sha256(seed:tensor name), float32 normals,
integer bit truncation to bf16: the same bytes on every machine), and of each case a fingerprint: its tokens, its
greedy tokens, and each logits row's max and logsumexp (equal within TOLERANCE: another BLAS may round the float64
sums differently in the last bits, so case files are hashed in the cache's own manifest, not in the repository).
"""
import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from golden import format as gformat
from golden import hf_files
from golden.activations import CLASSES
from golden.generate import model_case, progress
from reference.config import GPT_OSS_20B, GPT_OSS_120B, Config
from reference.writer import write_checkpoint

LAYERS = 2  # layer 0 windowed (128), layer 1 full: both attention paths at the release's shapes
TIERS = {"real-20b": (dataclasses.replace(GPT_OSS_20B, num_hidden_layers=LAYERS), 20),
         "real-120b": (dataclasses.replace(GPT_OSS_120B, num_hidden_layers=LAYERS), 120)}  # name -> (config, seed)
GREEDY_STEPS = 4
TOLERANCE = 1e-9  # fingerprint values: |a - b| <= TOLERANCE * (1 + |b|); float64 reruns differ by ~1e-15
PINS = Path(__file__).resolve().parent / "real_pins.json"
CACHE_ENV = "GPT_OSS_KIT_CACHE"
CKPT, ORIGINAL = "checkpoint", "derived/original"  # the HF root; the original layout (--layout original) on demand


def conversations() -> dict:
    """name -> harmony Conversation rendered for the assistant's completion."""
    from harmony import Conversation, DeveloperContent, Message, Role, SystemContent
    system = Message.from_role_and_content(Role.SYSTEM, SystemContent.new())
    dated = Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_conversation_start_date("2025-08-05"))
    dev = DeveloperContent.new().with_instructions("Answer in one short paragraph. Prefer metric units and cite "
                                                   "the rule you used.")
    return {
        "chat": Conversation.from_messages([system, Message.from_role_and_content(
            Role.USER, "What is the capital of France?")]),
        "multiturn": Conversation.from_messages([  # 180 tokens: past the 128-token window of layer 0
            dated, Message.from_role_and_content(Role.DEVELOPER, dev),
            Message.from_role_and_content(Role.USER, "How far does light travel in one microsecond?"),
            Message.from_role_and_content(Role.ASSISTANT, "Light travels about 300 metres in one microsecond: "
                                          "distance is speed times time, and the speed of light in vacuum is "
                                          "299,792,458 metres per second.").with_channel("final"),
            Message.from_role_and_content(Role.USER, "And in a glass fibre, where light is slower? Give the answer "
                                          "for a refractive index of 1.5, and explain briefly why the index "
                                          "divides the speed.")]),
    }


def prompts() -> dict[str, list[int]]:
    from harmony import Role, load_harmony_encoding
    enc = load_harmony_encoding("HarmonyGptOss")
    return {k: enc.render_conversation_for_completion(c, Role.ASSISTANT) for k, c in conversations().items()}


def cache_dir(name: str) -> Path:
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "gpt-oss-kit") / name


def pins() -> dict:
    return json.loads(PINS.read_text()) if PINS.is_file() else {}


def fingerprint(case: dict) -> dict:
    rows = np.concatenate([case["logits"], case["greedy.logits"]])  # (T + steps, V)
    m = rows.max(axis=-1)
    lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=-1))
    return {"tokens": case["tokens"].tolist(), "greedy": case["greedy.tokens"].tolist(),
            "max": [float(x) for x in m], "logsumexp": [float(x) for x in lse]}


def fingerprint_problems(got: dict, want: dict) -> list[str]:
    out = [f"{k} {got[k][:6]}... differ from the pinned {want[k][:6]}..." for k in ("tokens", "greedy")
           if got[k] != want[k]]
    for k in ("max", "logsumexp"):
        a, b = np.asarray(got[k]), np.asarray(want[k])
        if a.shape != b.shape or not np.all(np.abs(a - b) <= TOLERANCE * (1 + np.abs(b))):
            i = int(np.argmax(np.abs(a - b))) if a.shape == b.shape else 0
            out.append(f"logits row {i} {k} {a[i]!r}, pinned {b[i]!r}")
    return out


def write_checkpoint_files(dst: Path, name: str, layout: str = "hf") -> Path:
    """The tier's checkpoint: "hf" the release's root with the loader's files, "original" the same weights in the
    original layout (the release's original/ folder)."""
    config, seed = TIERS[name]
    write_checkpoint(dst, config, seed=seed, layout=layout)
    if layout == "hf":
        hf_files.write(dst)
    return dst


def generate(name: str, root: Path, want: dict | None = None) -> dict:
    """Write the tier into root (checkpoint, cases, manifest); check it against the pins `want` as it goes."""
    root = Path(root)
    config, _ = TIERS[name]
    todo = prompts()
    steps, done = 1 + len(todo) * (GREEDY_STEPS + len(CLASSES) + 1), [0]

    def report(what):
        done[0] = min(done[0] + 1, steps)
        progress(done[0], steps, what)

    progress(0, steps, f"{name}: writing checkpoint")
    ckpt = write_checkpoint_files(root / CKPT, name)
    report("checkpoint written")
    if want:
        _check_files(root / CKPT, want.get(CKPT, {}), f"generated {name} checkpoint")
    for case, tokens in todo.items():
        data = model_case(root / CKPT, tokens, GREEDY_STEPS, baseline_cache=False, report=report)
        if want and case in want.get("cases", {}) and (bad := fingerprint_problems(fingerprint(data),
                                                                                 want["cases"][case])):
            raise gformat.GoldenError(f"{name} case {case}: the reference here disagrees with {PINS.name}: {bad[0]}")
        gformat.save_npz(root / "cases" / f"{case}.npz", data, compress=False)
        report(f"case {case}")
    entry = {"dir": CKPT, "layout": "hf", "experts": "mxfp4", "config": config.to_json()}
    derived = {f"{ORIGINAL}/{f}": h for f, h in (want or {}).get("original", {}).items()}
    return gformat.write_manifest(root, derived, {"checkpoints": {c: entry for c in todo}, "kind": "real-shape",
                                                  "tier": name})


def _check_files(folder: Path, want: dict, what: str) -> None:
    for f, h in sorted(want.items()):
        got = gformat.sha256(folder / f) if (folder / f).is_file() else "missing"
        if got != h:
            raise gformat.GoldenError(f"{what}: {f} hashes to {got[:12]}..., {PINS.name} says {h[:12]}... (the "
                                      f"generator or a library it uses changed)")


def ensure(name: str, root: Path | None = None, log=sys.stderr) -> tuple[Path, dict]:
    """The tier's folder and its verified manifest: generated on first use, else checked against the pins and
    hashed file by file (gformat.verify). Every problem is a GoldenError of one line. A tier without pins
    (real-120b until someone runs --pin on it) is generated unchecked and hashed on this machine only, and says so."""
    if name not in TIERS:
        raise gformat.GoldenError(f"unknown golden tier {name!r} (known: {', '.join(TIERS)})")
    root = Path(root or cache_dir(name))
    want = pins().get(name)
    if want is None or "cases" not in want:
        log.write(f"golden tier {name}: {'its cases are' if want else 'it is'} not pinned in {PINS.name}, so they are "
                  f"checked against this machine's own first generation only (python -m golden.real {name} --pin "
                  f"pins them)\n")
    if not (root / gformat.MANIFEST).is_file():
        if root.exists():
            raise gformat.GoldenError(f"{root} exists but holds no {gformat.MANIFEST}: delete it to regenerate {name}")
        log.write(f"golden tier {name}: first use, generating it into {root} (real-20b: 4.1 GB, and the float64 "
                  f"reference plus five baselines on two cases at real shapes: up to an hour on 2 busy CPU cores; "
                  f"real-120b more; BENCHMARKS.md)\n")
        log.flush()
        tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        try:
            generate(name, tmp, want)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-made is left behind (3 GB and more)
            raise
        os.replace(tmp, root)
        log.write(f"golden tier {name}: generated in {time.time() - t0:.0f} s\n")
    manifest = json.loads((root / gformat.MANIFEST).read_text())
    have = {k.removeprefix(CKPT + "/"): v for k, v in manifest.get("files", {}).items() if k.startswith(CKPT + "/")}
    if manifest.get("tier") != name or (want is not None and have != want[CKPT]):
        raise gformat.GoldenError(f"{root} is not the {name} that {PINS.name} pins (made by another version of the "
                                  f"generator?): delete it to regenerate")
    return root, gformat.verify(root)


def original_form(root: Path, name: str, manifest: dict) -> Path:
    """The tier's checkpoint in the original layout (`--layout original`): written once, hash-checked against
    the (verified) manifest."""
    dst = Path(root) / ORIGINAL
    want = {k.removeprefix(ORIGINAL + "/"): v for k, v in manifest["derived"].items()}
    if not (dst / "model.safetensors").is_file():
        write_checkpoint_files(dst, name, layout="original")
    _check_files(dst, want, f"{name} original form (delete {dst} to rebuild it)")
    return dst


def pin(name: str, root: Path) -> dict:
    """Generate the tier into root (a fresh folder) and record its pins in golden/real_pins.json."""
    if root.exists():
        shutil.rmtree(root)
    generate(name, root)
    orig = write_checkpoint_files(root / ORIGINAL, name, layout="original")
    entry = {CKPT: {f.name: gformat.sha256(f) for f in sorted((root / CKPT).iterdir())},
             "original": {f.name: gformat.sha256(f) for f in sorted(orig.iterdir())},
             "cases": {c: fingerprint(gformat.load_npz(root / "cases" / f"{c}.npz")) for c in prompts()}}
    all_pins = {**pins(), name: entry}
    PINS.write_text(json.dumps(all_pins, indent=1, sort_keys=True) + "\n")
    old = json.loads((root / gformat.MANIFEST).read_text())
    gformat.write_manifest(root, {f"{ORIGINAL}/{f}": h for f, h in entry["original"].items()},
                           {k: old[k] for k in ("checkpoints", "kind", "tier")})
    return entry


def pin_checkpoint(name: str, root: Path) -> dict:
    """Pin only the checkpoint's files (real-120b: its cases take hours on 2 cores); the cases stay unpinned."""
    if root.exists():
        shutil.rmtree(root)
    ckpt = write_checkpoint_files(root / CKPT, name)
    entry = {CKPT: {f.name: gformat.sha256(f) for f in sorted(ckpt.iterdir())}}
    PINS.write_text(json.dumps({**pins(), name: entry}, indent=1, sort_keys=True) + "\n")
    return entry


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m golden.real", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(TIERS))
    ap.add_argument("--out", type=Path, help="folder (default: the cache folder the kit uses)")
    ap.add_argument("--pin", action="store_true", help=f"regenerate and rewrite its pins in {PINS.name}")
    ap.add_argument("--pin-checkpoint", action="store_true", help="pin the checkpoint's files only")
    args = ap.parse_args(argv)
    root = args.out or cache_dir(args.name)
    try:
        if args.pin or args.pin_checkpoint:
            (pin if args.pin else pin_checkpoint)(args.name, root)
            print(f"pinned {args.name} in {PINS} (folder {root})")
        else:
            root, m = ensure(args.name, root, sys.stderr)
            print(f"{args.name}: {root} verified ({len(m['files'])} files)")
    except gformat.GoldenError as e:
        sys.exit(f"golden.real: {e}")


if __name__ == "__main__":
    main()
