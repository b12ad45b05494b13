"""conformance: the kit that certifies a gpt-oss implementation against the reference's golden data.

`pytest conformance/ --impl NAME` (see conformance/README.md); the tolerance contract is conformance/SPEC.md.
"""
KIT_VERSION = "1.2.0"
# the sha256 of golden/data/manifest.json this kit version certifies against (the manifest hashes every golden
# file, so this one value pins them all). `python -m conformance verify` marks a certificate made on any other
# golden data; tests/test_conformance_verify.py fails when golden/data changes without this line.
GOLDEN_MANIFEST_SHA256 = "fd74783baf76a7ca3097f21f5532862d3fcdb16096cf9ccecb03f46a2a818aa7"
