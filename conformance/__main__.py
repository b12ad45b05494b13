"""`python -m conformance verify DIR [--rerun --impl NAME [--dtype D] [--device D]]`: check a certificate written by
`pytest conformance/ --certificate DIR`.

Exit 0: it verifies (and the re-run agrees); 1: it does not (one line per problem or difference); 2: certificate.json
is unreadable or malformed (one line naming the field). What a verified certificate proves: SPEC.md section 6.
"""
import argparse
import sys

from conformance.certificate import examine, rerun


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m conformance")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify a certificate folder against the kit's pinned golden data and contract")
    v.add_argument("folder")
    v.add_argument("--rerun", action="store_true", help="also re-run the kit on --impl and compare every status")
    v.add_argument("--impl", help="with --rerun: the implementation, as for pytest conformance/ --impl")
    v.add_argument("--dtype", help="with --rerun: the dtype class of the bounds (default: the certificate's)")
    v.add_argument("--device", choices=["cpu", "cuda"], help="with --rerun: device of a built-in impl")
    args = ap.parse_args(argv)
    if args.rerun != bool(args.impl):
        ap.error("--rerun and --impl go together: verify DIR --rerun --impl NAME")
    report = examine(args.folder)
    if report.malformed:
        print(f"certificate {args.folder}: {report.malformed}")
        sys.exit(2)
    if report.problems:
        print(f"certificate {args.folder} does NOT verify:", *(f"  - {p}" for p in report.problems), sep="\n")
    else:
        bounds = f"bounds of the {report.dtype} class" if report.dtype else "no dtype class recorded"
        print(f"certificate {args.folder} verifies: {report.verdict}, {bounds}")
    for note in report.notes:
        print(f"  note: {note}")
    differences = []
    if not args.rerun:
        print("  (a certificate is not a signature: verify proves it consistent with the golden data and the "
              "contract; `--rerun --impl NAME` re-runs the port)")
    else:
        differences, what = rerun(args.folder, args.impl, args.dtype, args.device)
        if differences:
            print(f"the re-run ({what}) DIFFERS from the certificate:", *(f"  - {d}" for d in differences), sep="\n")
        else:
            print(f"the re-run agrees ({what}): every status as the certificate records it")
    sys.exit(1 if report.problems or differences else 0)


if __name__ == "__main__":
    main()
