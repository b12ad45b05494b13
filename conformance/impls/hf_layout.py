"""The HF-layout folder a built-in adapter reads, whatever form the kit hands it.

The kit hands a port an original-layout checkpoint unless --layout says otherwise. transformers, mlx-lm and
KerasHub read the HF layout, so from an original one `hf_folder` writes an HF-layout copy (the same stored bytes
under HF names, q/k/v split, HF config.json; `to_hf`) once, cached by the source's config and file sizes/mtimes
under $GPT_OSS_KIT_CACHE (default: the temp folder's gpt-oss-kit-hf). An HF-layout folder (--layout hf or
hf-dense, or a user's own checkpoint behind `python -m golden --checkpoint`) is returned as it is.
"""
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from reference.checkpoint import Checkpoint
from reference.writer import write_hf

CACHE = Path(os.environ.get("GPT_OSS_KIT_CACHE", Path(tempfile.gettempdir()) / "gpt-oss-kit-hf"))


def to_hf(src, dst) -> Path:
    """Write an HF-layout copy of an original-layout checkpoint (byte-identical tensors, renamed/split)."""
    ck = Checkpoint(src)
    if ck.layout != "original":
        raise ValueError(f"{src}: expected an original-layout checkpoint, found {ck.layout}")
    return write_hf(ck.path, dst)


def cache_key(src: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(src.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update((src / "config.json").read_bytes())
    return h.hexdigest()[:16]


def hf_folder(checkpoint_dir) -> Path:
    """checkpoint_dir itself when it is in the HF layout, else its cached HF-layout copy (written on first use)."""
    src = Path(checkpoint_dir).resolve()
    if Checkpoint(src).layout == "hf":
        return src
    hf_dir = CACHE / cache_key(src)
    if not (hf_dir / "config.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        to_hf(src, tmp)
        try:
            tmp.rename(hf_dir)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return hf_dir
