"""Tokenizer and harmony vectors (golden/data/text/vectors.json, made by golden/text.py), for ports with
`tokenize` / `tokenize_special` / `detokenize` / `render` / `parse` / `parse_stream`.

tokenize(text) -> ids: o200k_harmony, special-token text encoded as plain text.
tokenize_special(text) -> ids: the same with special-token names encoded as the special tokens.
detokenize(ids) -> bytes: the tokens' bytes (specials as their names), not decoded: a token may end inside a
    UTF-8 character. bytes, a str (its UTF-8), or an array of byte values.
render(conversation_json) -> ids: harmony's render_conversation_for_completion(conversation, Role.ASSISTANT).
parse(ids) -> messages: harmony's parse_messages_from_completion_tokens(ids, Role.ASSISTANT), the ids being what
    the model wrote after the prompt's `<|start|>assistant`; each message as harmony's Message.to_dict() (an object
    with to_dict() or a JSON string of the list will do); malformed completions must raise (an exec port answers
    with an error).
parse_stream(ids) -> states: after each token, [role, channel, recipient, content_type, delta] as openai-harmony's
    StreamableParser(encoding, Role.ASSISTANT) reports them (current_role, current_channel, current_recipient,
    current_content_type, last_content_delta): a list or a dict with those keys per token.
"""
import json

import numpy as np
import pytest

from conformance import traps
from conformance.plugin import ImplError
from conformance.session import need, record

FIELDS = ("role", "name", "channel", "recipient", "content_type", "content")  # what parse is compared on


def _first_difference(got, want) -> int:
    return next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


def _report(request, name, bad, n):
    record(request, check=name, measured=len(bad), bound=0, ok=not bad, vectors=n)
    if bad:
        pytest.fail(f"{name}: {len(bad)} of {n} vectors differ: " + "; ".join(bad[:3]), pytrace=False)


def _listing_check(request, name, cases, fn, key, trap_variants=None):
    """trap_variants: traps.py's list for this check; a vector the port renders as one of them names it."""
    bad = []
    for i, c in enumerate(cases):
        got = [int(t) for t in fn(c[key])]
        if got != c["tokens"]:
            j = _first_difference(got, c["tokens"])
            trap = traps.diagnose(trap_variants, (c[key],), got, lambda g, w: g == list(w)) if trap_variants else ""
            bad.append(f"vector {i}: first difference at token {j} (got {got[j:j + 3]}, expected "
                       f"{c['tokens'][j:j + 3]}; {len(got)} vs {len(c['tokens'])} tokens){trap}")
    _report(request, name, bad, len(cases))


def _vectors(kit, key):
    if not kit.golden.listing()["text"]:
        pytest.skip(f"golden data {kit.golden.root} has no text vectors")
    cases = kit.golden.text().get(key)
    if not cases:
        pytest.skip(f"golden data {kit.golden.root} has no {key!r} text vectors (made by an older golden/)")
    return cases


def as_bytes(x) -> bytes:
    """A detokenize result -> bytes: bytes-like as is, str as its UTF-8, an array or list of byte values."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    a = np.asarray(x)
    if a.ndim != 1 or a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() > 255)):
        raise TypeError(f"detokenize returned {type(x).__name__} {str(x)[:80]}: expected bytes, a str, or a 1-D "
                        f"array of byte values 0..255")
    return a.astype(np.uint8).tobytes()


def _text_of(content, where):
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(c, dict) and c.get("type") == "text" for c in content):
        return "".join(str(c.get("text", "")) for c in content)
    raise TypeError(f"{where}: content must be a string or a list of {{'type': 'text', 'text': ...}}, got "
                    f"{str(content)[:80]}")


def _json_list(x, what: str, expected: str) -> list:
    """A port's list result, or the same list as JSON text (what an exec port or a JSON-minded port returns)."""
    if isinstance(x, str):
        x = json.loads(x)
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"{what} returned {type(x).__name__}: expected {expected}")
    return x


def as_messages(x) -> list[tuple]:
    """A parse result -> one (role, name, channel, recipient, content_type, text) tuple per message. Accepts a list
    of harmony Message.to_dict() dicts (absent keys are None), objects with to_dict(), or a JSON string of the list."""
    out = []
    for i, m in enumerate(_json_list(x, "parse", "a list of messages")):
        if hasattr(m, "to_dict"):
            m = m.to_dict()
        if not isinstance(m, dict):
            raise TypeError(f"parse: message {i} is {type(m).__name__}, expected a dict as harmony's "
                            f"Message.to_dict()")
        role = m.get("role")
        role = getattr(role, "value", role)
        out.append((role, m.get("name"), m.get("channel"), m.get("recipient"), m.get("content_type"),
                    _text_of(m.get("content", ""), f"parse: message {i}")))
    return out


def _show(v) -> str:
    return repr(v) if v is None or len(str(v)) <= 60 else repr(str(v)[:60] + "...")


def _message_difference(got: list[tuple], want: list[tuple]) -> str:
    if len(got) != len(want):
        return f"{len(got)} messages, expected {len(want)} (got {[g[2] for g in got]} channels)"
    for i, (g, w) in enumerate(zip(got, want)):
        for field, a, b in zip(FIELDS, g, w):
            if a != b:
                return f"message {i}: {field} {_show(a)}, expected {_show(b)}"
    return ""


def test_tokenizer(kit, request):
    cases = _vectors(kit, "tokenizer")
    fn = need(kit.op_impl(), "tokenize")
    _listing_check(request, "tokenizer", cases, fn, "text")


def test_tokenizer_special(kit, request):
    cases = _vectors(kit, "tokenizer_special")
    fn = need(kit.op_impl(), "tokenize_special")
    _listing_check(request, "tokenizer_special", cases, fn, "text")


def test_detokenize(kit, request):
    cases = _vectors(kit, "detokenize")
    fn = need(kit.op_impl(), "detokenize")
    bad = []
    for i, c in enumerate(cases):
        got, want = as_bytes(fn(list(c["tokens"]))), bytes.fromhex(c["bytes_hex"])
        if got != want:
            j = _first_difference(got, want)
            bad.append(f"vector {i} ({len(c['tokens'])} tokens): first difference at byte {j} (got "
                       f"{got[j:j + 6].hex()}, expected {want[j:j + 6].hex()}; {len(got)} vs {len(want)} bytes)")
    _report(request, "detokenize", bad, len(cases))


def test_harmony_render(kit, request):
    cases = _vectors(kit, "harmony")
    fn = need(kit.op_impl(), "render")
    _listing_check(request, "harmony_render", cases, fn, "conversation", traps.HARMONY_RENDER)


def test_harmony_parse(kit, request):
    cases = _vectors(kit, "harmony_parse")
    fn = need(kit.op_impl(), "parse")
    bad = []
    for i, c in enumerate(cases):
        try:
            got = as_messages(fn(list(c["tokens"])))
        except ImplError:
            raise
        except Exception as e:  # noqa: BLE001 - a well-formed completion must parse; the port's error is the finding
            bad.append(f"vector {i}: raised {type(e).__name__}: {str(e)[:120]}")
            continue
        diff = _message_difference(got, as_messages(c["messages"]))
        if diff:
            bad.append(f"vector {i}: {diff}")
    _report(request, "harmony_parse", bad, len(cases))


STATE_FIELDS = ("role", "channel", "recipient", "content_type", "delta")


def as_states(x) -> list[tuple]:
    """A parse_stream result -> one (role, channel, recipient, content_type, delta) tuple per token; each state a
    5-list in that order or a dict with those keys (absent keys are None); a JSON string of the list will do."""
    out = []
    for i, s in enumerate(_json_list(x, "parse_stream", "a list with one state per token")):
        if isinstance(s, dict):
            s = [s.get(k) for k in STATE_FIELDS]
        if not isinstance(s, (list, tuple)) or len(s) != len(STATE_FIELDS):
            raise TypeError(f"parse_stream: state {i} is {str(s)[:80]}: expected [role, channel, recipient, "
                            f"content_type, delta] or a dict with those keys")
        out.append(tuple(getattr(v, "value", v) for v in s))  # a Role enum counts as its name
    return out


def test_harmony_parse_stream(kit, request):
    cases = _vectors(kit, "harmony_stream")
    fn = need(kit.op_impl(), "parse_stream")
    bad = []
    for i, c in enumerate(cases):
        got, want = as_states(fn(list(c["tokens"]))), as_states(c["states"])
        if len(got) != len(want):
            bad.append(f"vector {i}: {len(got)} states for {len(want)} tokens")
            continue
        j = next((j for j, (g, w) in enumerate(zip(got, want)) if g != w), None)
        if j is not None:
            field, a, b = next((f, a, b) for f, a, b in zip(STATE_FIELDS, got[j], want[j]) if a != b)
            bad.append(f"vector {i}: after token {j} ({c['tokens'][j]}): {field} {_show(a)}, expected {_show(b)}")
    _report(request, "harmony_stream", bad, len(cases))


def _rejection_check(request, name, fn, cases, key, good, unit):
    """Each case must raise (an exec port answers with an error). `good` must not raise first, so a function that
    raises on everything cannot pass. unit: what a result holds, for the message ("messages", "tokens")."""
    if good is not None:
        try:
            fn(good)
        except ImplError:  # the exec port died or broke the protocol
            raise
        except Exception as e:  # noqa: BLE001
            record(request, check=name, measured=len(cases), bound=0, ok=False, vectors=len(cases))
            pytest.fail(f"{name}: raised on a well-formed input ({type(e).__name__}: {str(e)[:120]}), so its "
                        f"rejections say nothing", pytrace=False)
    bad = []
    for i, c in enumerate(cases):
        try:
            got = fn(c[key])
        except ImplError:  # that is no rejection
            raise
        except Exception:  # noqa: BLE001 - any error is a rejection
            continue
        n = len(got) if hasattr(got, "__len__") else "?"
        bad.append(f"vector {i} ({c['why']}): accepted, {n} {unit} returned")
    _report(request, name, bad, len(cases))


def test_harmony_render_rejects_unrenderable(kit, request):
    """Conversations openai-harmony refuses to render must be refused: system or developer content from a role that
    may not carry it (a template that renders it lets a user speak as the system), unknown roles and content."""
    cases = _vectors(kit, "harmony_render_errors")
    fn = need(kit.op_impl(), "render")
    good = kit.golden.text().get("harmony") or []
    _rejection_check(request, "harmony_render_rejects", fn, cases, "conversation",
                     good[0]["conversation"] if good else None, "tokens")


def test_harmony_parse_rejects_malformed(kit, request):
    cases = _vectors(kit, "harmony_parse_errors")
    fn = need(kit.op_impl(), "parse")
    good = kit.golden.text().get("harmony_parse") or []
    _rejection_check(request, "harmony_parse_rejects", lambda tokens: fn(list(tokens)), cases, "tokens",
                     good[0]["tokens"] if good else None, "messages")
