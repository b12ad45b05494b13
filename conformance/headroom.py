"""`python -m conformance.headroom CERT...`: how close each certified port came to its bounds.

CERT is a certificate folder (what `--certificate` wrote) or its certificate.json.

Prints, per certificate and check family (op, logits, logprob, stages, ...), the worst measured/bound ratio
and the worst measured error; SPEC.md's measurement tables come from this script, e.g.
  pytest conformance/ --impl transformers --dtype bfloat16 --certificate /tmp/c-hf-bf16
  python -m conformance.headroom /tmp/c-hf-bf16
"""
import json
import re
import sys
from pathlib import Path


def family(check: str) -> str:
    name = check.split(" ")[0]
    head, _, rest = name.partition("/")
    if head in ("logits", "greedy", "decode", "batch"):
        return f"{head}.logprob" if rest.endswith(".logprob") else head
    if head == "stages":
        return "stages"
    return head


def load(path) -> dict:
    """A certificate folder or its certificate.json -> the certificate; a clear SystemExit otherwise."""
    p = Path(path)
    p = p / "certificate.json" if p.is_dir() else p
    try:
        cert = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"conformance.headroom: {path}: not a certificate folder or certificate.json ({e})")
    if not isinstance(cert, dict) or not {"checks", "implementation", "summary"} <= cert.keys():
        raise SystemExit(f"conformance.headroom: {p}: JSON without a certificate's checks/implementation/summary")
    return cert


def table(folder) -> list[tuple[str, float, float, float]]:
    cert = load(folder)
    worst: dict[str, tuple[float, float, float]] = {}
    for c in cert["checks"]:
        for m in c["measures"]:
            b, x = m.get("bound"), m.get("measured")
            if not b or x is None or re.search(r"\.argmax$", m.get("check", "")):
                continue
            f = family(m["check"])
            r = x / b
            if f not in worst or r > worst[f][0]:
                worst[f] = (r, x, b)
    return [(f, *v) for f, v in sorted(worst.items())]


def main(argv=None):
    args = argv or sys.argv[1:]
    if not args:
        raise SystemExit("usage: python -m conformance.headroom CERT_DIR_OR_JSON...")
    for folder in args:
        cert = load(folder)
        imp = cert["implementation"]
        print(f"\n{imp.get('name')} (bounds: {imp.get('dtype')}), {cert['summary']['verdict']}")
        print(f"| check family | worst measured/bound | measured | bound |\n|---|---|---|---|")
        for f, r, x, b in table(folder):
            print(f"| {f} | {r:.2f} | {x:.3g} | {b:.3g} |")


if __name__ == "__main__":
    main()
