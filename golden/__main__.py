"""`python -m golden`: (re)generate the golden data from reference/.

  python -m golden                         regenerate golden/data (committed; byte-identical on one machine)
  python -m golden --only tiny             regenerate one checkpoint's case (and keep the rest)
  python -m golden --out DIR               write a fresh copy elsewhere (e.g. to diff against the committed one)
  python -m golden --checkpoint PATH --out DIR [--tokens 1,2,3 ...] [--steps 4]
                                           golden cases from your own checkpoint (gpt-oss-20b/120b original/
                                           folder), with a progress bar on stderr; then
                                           `pytest conformance/ --impl NAME --golden DIR`
"""
import argparse
import sys
from pathlib import Path

from golden.format import DATA_DIR
from golden.generate import CHECKPOINTS, generate, generate_from_checkpoint

# Default prompts for a real checkpoint: a harmony-rendered question (o200k_harmony ids) and a plain sentence.
REAL_PROMPTS = [[200006, 17360, 200008, 3575, 553, 17554, 162016, 11, 261, 4410, 6439, 2359, 22203, 656, 7788,
                 17527, 558, 200007, 200006, 1428, 200008, 4827, 382, 220, 17, 10, 17, 30, 200007, 200006, 173781],
                [976, 4853, 19705, 25214, 1072, 290, 29082, 6446, 13]]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default {DATA_DIR})")
    ap.add_argument("--only", action="append", choices=sorted(CHECKPOINTS), help="regenerate only these cases")
    ap.add_argument("--checkpoint", type=Path, help="generate cases from this checkpoint folder instead")
    ap.add_argument("--tokens", action="append", help="a comma-separated prompt (repeatable; with --checkpoint)")
    ap.add_argument("--steps", type=int, default=4, help="greedy steps per prompt (with --checkpoint)")
    args = ap.parse_args(argv)
    if args.checkpoint:
        if args.out is None:
            sys.exit("--checkpoint needs --out DIR (golden/data holds the synthetic golden data)")
        if args.out.exists() and any(args.out.iterdir()):
            sys.exit(f"--out {args.out} is not empty")
        try:
            prompts = [[int(t) for t in p.split(",") if t.strip()] for p in args.tokens] if args.tokens else REAL_PROMPTS
        except ValueError:
            sys.exit("--tokens must be comma-separated integers")
        m = generate_from_checkpoint(args.checkpoint, args.out, prompts, args.steps)
    else:
        m = generate(args.out or DATA_DIR, only=args.only)
    print(f"wrote {len(m['files'])} golden files to {args.out or DATA_DIR} (manifest format {m['format_version']})")


if __name__ == "__main__":
    main()
