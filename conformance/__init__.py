"""conformance: the kit that certifies a gpt-oss implementation against the reference's golden data.

`pytest conformance/ --impl NAME` (see conformance/README.md); the tolerance contract is conformance/SPEC.md.
"""
KIT_VERSION = "1.0.0"
