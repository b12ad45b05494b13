"""How the kit's command lines fail: one line on stderr naming the problem, exit status 2, no traceback (`--debug`
shows it). `python -m reference` and `python -m optimized` use it; the pattern is golden's and conformance.quality's
(catch the errors a user can cause, print their last line), made one helper so that every CLI says it alike.

    ap = cli.ArgumentParser(prog="python -m x"); cli.add_debug(ap)
    ap.add_argument("--steps", type=cli.integer(0), ...)      # argument errors: "x: error: argument --steps: ..."
    args = ap.parse_args(argv)
    with cli.reported(ap.prog, args.debug):                    # any exception: "x: CheckpointError: ...", exit 2
        ...

Not here: what any command does.
"""
import argparse
import math
import sys
from contextlib import contextmanager

EXIT_ERROR = 2  # argparse's own status for a usage error; every other refusal uses it too


class Failure(Exception):
    """A refusal the command itself words completely: printed as its message alone."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line ("prog: error: argument --top-p: ...") and exit status 2.
    Subparsers made by add_subparsers are of this class too."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {one_line(message)}\n")


def add_debug(parser: argparse.ArgumentParser):
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")


@contextmanager
def reported(prog: str, debug: bool = False):
    """Run the body; an exception becomes one line on stderr, as a traceback's last line names it, and exit 2."""
    try:
        yield
    except Exception as e:
        if debug:
            raise
        what = str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
        print(f"{prog}: {one_line(what)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def integer(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (hi None: no upper bound)."""
    allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {text!r}")
        return value
    return parse


def number(lo: float, hi: float = math.inf, lo_open: bool = False):
    """An argparse type: a finite float in [lo, hi], or (lo, hi] with lo_open."""
    if math.isfinite(hi):
        allowed = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    else:
        allowed = f"{'>' if lo_open else '>='} {lo:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {allowed}, got {text!r}")
        return value
    return parse


def token_ids(text: str) -> list[int]:
    """An argparse type: comma-separated non-negative token ids ("1,2,3"); the vocabulary bound is checked once the
    checkpoint is open (reference/tokens.py)."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"no token ids in {text!r}")
    try:
        ids = [int(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r:.80}") from None
    for i, t in enumerate(ids):
        if t < 0:
            raise argparse.ArgumentTypeError(f"token id {t} at position {i} is negative")
    return ids
