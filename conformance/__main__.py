"""`python -m conformance verify DIR`: check a certificate written by `pytest conformance/ --certificate DIR`."""
import argparse
import sys

from conformance.certificate import verify


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m conformance")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify a certificate folder against the golden data it names")
    v.add_argument("folder")
    args = ap.parse_args(argv)
    problems = verify(args.folder)
    if problems:
        print(f"certificate {args.folder} does NOT verify:", *(f"  - {p}" for p in problems), sep="\n")
        sys.exit(1)
    print(f"certificate {args.folder} verifies")


if __name__ == "__main__":
    main()
