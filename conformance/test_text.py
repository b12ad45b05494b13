"""Tokenizer and harmony vectors (golden/data/text/vectors.json), for ports with `tokenize` / `render`.

tokenize(text) -> ids: o200k_harmony, special-token text encoded as plain text.
render(conversation_json) -> ids: harmony's render_conversation_for_completion(conversation, Role.ASSISTANT).
"""
import pytest

from conformance.session import need, record


def _listing_check(request, name, cases, fn, key):
    bad = []
    for i, c in enumerate(cases):
        got = [int(t) for t in fn(c[key])]
        if got != c["tokens"]:
            j = next((j for j, (a, b) in enumerate(zip(got, c["tokens"])) if a != b), min(len(got), len(c["tokens"])))
            bad.append(f"vector {i}: first difference at token {j} (got {got[j:j + 3]}, expected "
                       f"{c['tokens'][j:j + 3]}; {len(got)} vs {len(c['tokens'])} tokens)")
    record(request, check=name, measured=len(bad), bound=0, ok=not bad, vectors=len(cases))
    if bad:
        pytest.fail(f"{name}: {len(bad)} of {len(cases)} vectors differ: " + "; ".join(bad[:3]), pytrace=False)


def _need_vectors(kit):
    if not kit.golden.listing()["text"]:
        pytest.skip(f"golden data {kit.golden.root} has no text vectors")


def test_tokenizer(kit, request):
    _need_vectors(kit)
    fn = need(kit.op_impl(), "tokenize")
    _listing_check(request, "tokenizer", kit.golden.text()["tokenizer"], fn, "text")


def test_harmony_render(kit, request):
    _need_vectors(kit)
    fn = need(kit.op_impl(), "render")
    _listing_check(request, "harmony_render", kit.golden.text()["harmony"], fn, "conversation")
