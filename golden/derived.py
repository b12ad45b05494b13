"""The derived forms of a synthetic golden checkpoint: their layout names, where they live, how they are written.

A golden checkpoint is stored in OpenAI's original layout (checkpoints/NAME/). `pytest conformance/ --layout FORM`
hands a port the same model in another form: derived/FORM/NAME/, written on first use from the stored checkpoint by
reference/writer.py:write_hf and checked file by file against the "derived" hashes of the golden manifest (written
by golden/format.py, recorded by golden/generate.py from this same writer). "hf": the stored tensors byte for byte
under HF names (q/k/v split), MXFP4 experts; "hf-dense": its dense twin, the experts decoded into BF16 (exact).
What this is not: a verifier of the rest of the folder (the caller passes the manifest gformat.verify returned), nor
the real-shape tier's forms (golden/real.py: its HF root is stored, its original form derived).
"""
from pathlib import Path

from golden import format as gformat
from reference.writer import write_hf

LAYOUTS = ("original", "hf", "hf-dense")  # --layout: the checkpoint forms a port can be handed
DERIVED = LAYOUTS[1:]  # the forms written on demand from the stored (original) one


def write(root, form: str, name: str) -> Path:
    """Write derived/FORM/NAME/ from checkpoints/NAME/."""
    assert form in DERIVED, form
    root = Path(root)
    return write_hf(root / "checkpoints" / name, root / "derived" / form / name, dense=form == "hf-dense")


def checkpoint_dir(root, manifest: dict, form: str, name: str) -> Path:
    """derived/FORM/NAME/, written if a file the manifest lists is missing, every listed file hash-checked."""
    root = Path(root)
    prefix = f"derived/{form}/{name}/"
    rels = [rel for rel in manifest["derived"] if rel.startswith(prefix)]
    if not rels:
        raise gformat.GoldenError(f"golden manifest has no {form} form of checkpoint {name!r} "
                                  f"(regenerate with python -m golden)")
    for rel in rels:
        p, want = root / rel, manifest["derived"][rel]
        if not p.is_file():
            write(root, form, name)
        got = gformat.sha256(p)
        if got != want:
            raise gformat.GoldenError(f"derived golden file {rel} hashes to {got[:12]}..., manifest says "
                                      f"{want[:12]}... (delete {root / 'derived'} to rebuild it)")
    return root / prefix
