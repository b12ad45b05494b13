"""The server's reading of a reply (optimized/serve/reply.py) and its text helpers (text.py), without a server:
harmony's messages mapped to reasoning / content / tool calls, the documented raw fallback for a reply that is not
harmony, streamed parts that join to the whole, stop strings held back across pieces."""
import pytest

from harmony import load_harmony_encoding
from optimized.serve.reply import Reply
from optimized.serve.text import StopStrings, TextStream, decode

ENC = load_harmony_encoding()


def toks(text):
    return ENC.encode(text, allowed_special="all")


def read(text, prefix=""):
    reply = Reply(ENC, toks(prefix) if prefix else ())
    parts = [p for t in toks(text) for p in reply.feed(t)] + reply.finish()
    return reply, parts


def test_channels_map_to_reasoning_content_and_calls():
    reply, parts = read("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>commentary<|message|>"
                        "Checking.<|end|><|start|>assistant<|channel|>commentary to=functions.a <|constrain|>json"
                        "<|message|>{\"x\":1}<|end|><|start|>assistant<|channel|>commentary to=functions.b"
                        "<|message|><|call|>")
    assert "".join(reply.reasoning) == "think" and "".join(reply.content) == "Checking."
    assert [(c["name"], c["arguments"]) for c in reply.calls] == [("a", '{"x":1}'), ("b", "")]
    assert reply.finished_call and reply.malformed is None
    assert [p[0] for p in parts if p[0] == "call"] == ["call", "call"]  # an empty call is still announced
    assert "".join(p[2] for p in parts if p[0] == "arguments") == '{"x":1}'
    assert reply.reasoning_tokens > 0


def test_a_reply_that_is_not_harmony_is_raw_text_from_the_failing_message():
    good = "<|channel|>final<|message|>Hi.<|end|>"
    bad = "<|start|>assistant junk words here<|end|> more"
    reply, parts = read(good + bad)
    assert reply.malformed and "".join(reply.content) == "Hi." + decode(toks(bad))
    assert "".join(p[1] for p in parts if p[0] == "content") == "".join(reply.content)
    reply, _ = read("random text with no header")  # the model's very first message fails: all of it is content
    assert "".join(reply.content) == "random text with no header" and reply.malformed and not reply.finished_call


def test_a_forced_header_is_read_first():
    reply, _ = read('{"city":"Oslo"}<|call|>', prefix="<|channel|>commentary to=functions.w <|constrain|>json"
                                                      "<|message|>")
    assert [(c["name"], c["arguments"]) for c in reply.calls] == [("w", '{"city":"Oslo"}')]
    assert reply.reasoning_tokens == 0


def test_text_stream_completes_split_characters():
    ids = toks("héllo 🙂 wörld")
    s = TextStream()
    pieces = [s.feed(t) for t in ids] + [s.flush()]
    assert "".join(pieces) == "héllo 🙂 wörld" == decode(ids)
    assert "\ufffd" not in "".join(pieces)


@pytest.mark.parametrize("stops, pieces, sent, hit", [
    (["END"], ["abc", "E", "N", "D", "xyz"], "abc", True),
    (["END"], ["abc", "E", "x"], "abcEx", False),
    (["b", "cd"], ["a", "c", "d"], "a", True),
    ([], ["a", "b"], "ab", False),
])
def test_stop_strings_hold_back_what_may_still_match(stops, pieces, sent, hit):
    s = StopStrings(stops)
    out = ""
    for p in pieces:
        out += s.push(p)
        if s.hit:
            break
    out += "" if s.hit else s.flush()
    assert (out, s.hit) == (sent, hit)
