"""The committed text vectors (golden/data/text/vectors.json, golden/text.py) against independent oracles:
OpenAI's openai-harmony for the harmony prompts, parses and rejections, tiktoken's o200k_base for the
tokenizer and the detokenizer's bytes. The vectors come from harmony/ and reference/tokenizer.py; these
tests make them OpenAI's answers, not ours. Also: the conformance checks' result normalization."""
import json

import numpy as np
import pytest

from conformance.test_text import as_bytes, as_messages
from golden.format import DATA_DIR
from test_tokenizer import tiktoken_encodings  # noqa: F401 - fixture

VECTORS = json.loads((DATA_DIR / "text" / "vectors.json").read_text())


@pytest.fixture(scope="module")
def o200k(tiktoken_encodings):  # noqa: F811
    """tiktoken's own o200k_base (its registry's pattern and special table, reading our file as its cache)."""
    return tiktoken_encodings[0]


def test_vector_lists_are_there():
    counts = {k: len(v) for k, v in VECTORS.items()}
    assert counts["tokenizer"] >= 28 and counts["tokenizer_special"] >= 8, counts
    assert counts["harmony"] >= 18 and counts["harmony_parse"] >= 10, counts
    assert counts["harmony_parse_errors"] >= 5 and counts["detokenize"] >= 10, counts
    assert counts["harmony_render_errors"] >= 5 and counts["harmony_stream"] == counts["harmony_parse"], counts


def test_tokenizer_vectors_match_tiktoken(o200k):
    for c in VECTORS["tokenizer"]:
        assert o200k.encode_ordinary(c["text"]) == c["tokens"], c["text"]


def test_tokenizer_special_vectors_match_tiktoken_and_harmony(tiktoken_encodings, oracle):  # noqa: F811
    """Special-token names as the specials: tiktoken's own o200k_harmony and openai-harmony's encoder agree."""
    _, tk_harmony = tiktoken_encodings
    _, enc = oracle
    for c in VECTORS["tokenizer_special"]:
        assert tk_harmony.encode(c["text"], allowed_special="all") == c["tokens"], c["text"]
        assert enc.encode(c["text"], allowed_special="all") == c["tokens"], c["text"]
    assert sum(t >= 199999 for c in VECTORS["tokenizer_special"] for t in c["tokens"]) >= 20


def test_detokenize_vectors_match_tiktoken_and_harmony(o200k, oracle):  # noqa: F811
    _, enc = oracle
    partial = 0
    for c in VECTORS["detokenize"]:
        want = bytes.fromhex(c["bytes_hex"])
        ordinary = [t for t in c["tokens"] if t < 199999]
        if ordinary == c["tokens"]:
            assert o200k.decode_bytes(c["tokens"]) == want, c["tokens"]
        try:
            text = want.decode("utf-8")
        except UnicodeDecodeError:  # a token that ends inside a character: tiktoken above is the oracle
            partial += 1
            continue
        assert enc.decode_utf8(c["tokens"]) == text, c["tokens"]  # specials by name, reserved ids included
    assert partial >= 2, "the vectors must hold tokens that split a UTF-8 character"


def test_render_vectors_match_openai_harmony(oracle):  # noqa: F811
    oh, enc = oracle
    for i, c in enumerate(VECTORS["harmony"]):
        conv = oh.Conversation.from_json(c["conversation"])
        assert enc.render_conversation_for_completion(conv, oh.Role.ASSISTANT) == c["tokens"], f"conversation {i}"


def test_parse_vectors_match_openai_harmony(oracle):  # noqa: F811
    oh, enc = oracle
    for i, c in enumerate(VECTORS["harmony_parse"]):
        got = enc.parse_messages_from_completion_tokens(c["tokens"], oh.Role.ASSISTANT)
        assert as_messages([m.to_dict() for m in got]) == as_messages(c["messages"]), f"completion {i}"
    recipients = {m.get("recipient") for c in VECTORS["harmony_parse"] for m in c["messages"]}
    assert {"functions.get_weather", "browser.search", "python"} <= recipients


def test_stream_vectors_match_openai_harmony(oracle):  # noqa: F811
    """Per token, the oracle's StreamableParser state; the vectors hold characters split across tokens (no delta
    for the first part, then the whole character)."""
    oh, enc = oracle
    split = 0
    for i, c in enumerate(VECTORS["harmony_stream"]):
        parser = oh.StreamableParser(enc, oh.Role.ASSISTANT)
        for j, (t, want) in enumerate(zip(c["tokens"], c["states"], strict=True)):
            parser.process(t)
            role = parser.current_role
            got = [None if role is None else role.value, parser.current_channel, parser.current_recipient,
                   parser.current_content_type, parser.last_content_delta]
            assert got == want, f"completion {i}, token {j}"
            split += t < 199999 and want[1] is not None and want[4] is None  # content token, nothing emitted
    assert split >= 1, "the vectors must hold a character split across tokens"


def test_render_error_vectors_refused_by_openai_harmony(oracle):  # noqa: F811
    oh, enc = oracle
    for c in VECTORS["harmony_render_errors"]:
        with pytest.raises(Exception):
            enc.render_conversation_for_completion(oh.Conversation.from_json(c["conversation"]), oh.Role.ASSISTANT)
        assert c["why"]
    assert any("system content in a user message" in c["why"] for c in VECTORS["harmony_render_errors"])


def test_parse_error_vectors_rejected_by_openai_harmony(oracle):  # noqa: F811
    oh, enc = oracle
    for c in VECTORS["harmony_parse_errors"]:
        with pytest.raises(Exception):
            enc.parse_messages_from_completion_tokens(c["tokens"], oh.Role.ASSISTANT)
        assert c["why"]


def test_result_normalization():
    """What the kit accepts from a port: harmony dicts, objects with to_dict(), JSON text; bytes, str, byte arrays."""
    m = {"role": "assistant", "name": None, "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
         "channel": "final"}

    class Obj:
        def to_dict(self):
            return m

    flat = [("assistant", None, "final", None, None, "ab")]
    assert as_messages([m]) == as_messages([Obj()]) == as_messages(json.dumps([m])) == flat
    assert as_messages([dict(m, content="ab")]) == flat
    with pytest.raises(TypeError, match="content must be"):
        as_messages([dict(m, content=[{"type": "image"}])])
    with pytest.raises(TypeError, match="expected a list"):
        as_messages({"messages": []})
    assert as_bytes(b"\xf0\x9f") == as_bytes(bytearray(b"\xf0\x9f")) == as_bytes(np.array([240, 159])) == b"\xf0\x9f"
    assert as_bytes("ü") == b"\xc3\xbc"
    with pytest.raises(TypeError, match="byte values"):
        as_bytes([256])


def test_golden_cli_prompts_are_what_they_say(oracle):  # noqa: F811
    """`python -m golden --checkpoint`'s --chat and --text prompts (and its defaults): openai-harmony's rendering
    of the default system message and the user message, and the text's own tokens (they decode back to it)."""
    from golden.__main__ import DEFAULT_CHAT, DEFAULT_TEXT, real_prompts
    oh, enc = oracle
    chat, text = real_prompts(DEFAULT_CHAT, DEFAULT_TEXT)
    conv = oh.Conversation.from_messages([oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new()),
                                          oh.Message.from_role_and_content(oh.Role.USER, DEFAULT_CHAT[0])])
    assert chat == enc.render_conversation_for_completion(conv, oh.Role.ASSISTANT)
    assert enc.decode_utf8(text) == DEFAULT_TEXT[0] and enc.decode_utf8(chat).endswith("<|start|>assistant")
