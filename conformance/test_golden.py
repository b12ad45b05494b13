"""The golden data itself: every file present and unaltered (sha256 against the manifest), right version.
A failure here fails the whole run: no other check is meaningful against untrusted golden data."""
from golden.format import FORMAT_VERSION


def test_golden_manifest(kit, request):
    m = kit.golden.manifest  # raises GoldenError naming each missing, altered or unlisted file
    assert m["format_version"] == FORMAT_VERSION
    request.node.user_properties.append(("measure", {"check": "golden", "files": len(m["files"]),
                                                     "manifest_sha256": kit.golden.manifest_sha256}))
