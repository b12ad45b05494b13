"""harmony parsing == openai-harmony 0.0.8 parsing: round trips, streaming, and fuzzed (adversarial) token streams.

- round trip: rendered realistic conversations parse back to the messages they came from, as the oracle parses;
- streaming: StreamableParser fed one token at a time shows, after every token, the oracle's current_role,
  current_channel, current_recipient, current_content(_type), last_content_delta, state and state_data,
  and ends with the messages the whole-completion parser returns;
- fuzz: random token streams (structural specials, header words, any id, ids past the vocabulary),
  truncated / spliced / mutated renderings, unknown roles, missing <|message|>, strict and lenient: ours
  raises a HarmonyError exactly where the oracle raises, and returns its messages everywhere else.
  Never another exception type, never a hang (each step is bounded by the tokens seen so far).
"""

from hypothesis import given
from hypothesis import strategies as st

import harmony
from harmony.render import CALL, CHANNEL, CONSTRAIN, END, MESSAGE, RETURN, START
from test_harmony_common import (  # noqa: F401 - fixtures
    build_ours,
    examples,
    oracle,
    ours,
    outcome,
    realistic_conversations,
    same_behaviour,
)

N_VOCAB = 201088
STRUCTURAL = [START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL, 199999, 200018, 201087]
HEADER_WORDS = [
    "assistant",
    "user",
    "system",
    "developer",
    "tool",
    "root",
    " to=functions.get_weather",
    " to=assistant",
    "functions.get_weather",
    "analysis",
    "final",
    "commentary",
    " json",
    "json",
    " ",
    "\n",
    "  ",
    "to=",
    " to=",
    ":alice",
    "browser.search",
    "\u3000",
    "\x0b",
    "hello world",
    "日本語",
    "😀",
]


def snapshot(parser, full: bool) -> tuple:
    role = parser.current_role
    out = (
        None if role is None else role.value,
        parser.current_channel,
        parser.current_recipient,
        parser.current_content,
        parser.current_content_type,
        parser.last_content_delta,
    )
    # state_data holds every content token so far (as JSON, in the oracle): read it at every special token,
    # the token before one, every 16th token and the last, or long messages make the test quadratic.
    return out + (parser.state.value, parser.state_data) if full else out


def stream(mod, enc, tokens, role, strict):
    """Feed one token at a time: (a snapshot after each token, ("ok", message dicts) or ("error", e))."""
    made = outcome(mod.StreamableParser, enc, None if role is None else mod.Role(role), strict=strict)
    if made[0] == "error":
        return [], made
    parser, snaps = made[1], []
    for i, t in enumerate(tokens):
        step = outcome(parser.process, t)
        if step[0] == "error":
            return snaps, step
        nxt = tokens[i + 1] if i + 1 < len(tokens) else -1
        snaps.append(snapshot(parser, full=i % 16 == 0 or not 0 <= t < 199998 or not 0 <= nxt < 199998))
    end = outcome(parser.process_eos)
    if end[0] == "error":
        return snaps, end
    return snaps, ("ok", [m.to_dict() for m in parser.messages])


def whole(mod, enc, tokens, role, strict):
    r = outcome(
        enc.parse_messages_from_completion_tokens, tokens, None if role is None else mod.Role(role), strict=strict
    )
    return r if r[0] == "error" else ("ok", [m.to_dict() for m in r[1]])


def check_parsers(oracle, ours, tokens, role=None, strict=True):
    """Ours streams exactly as the oracle, and both whole parsers agree with the stream. Returns the outcome."""
    oh, enc_o = oracle
    snaps_m, end_m = stream(harmony, ours, tokens, role, strict)
    snaps_o, end_o = stream(oh, enc_o, tokens, role, strict)
    for i, (a, b) in enumerate(zip(snaps_m, snaps_o)):
        assert a == b, f"after token {i} ({tokens[i]}): ours {a}, oracle {b}"
    assert len(snaps_m) == len(snaps_o), f"ours stopped after {len(snaps_m)} tokens, oracle after {len(snaps_o)}"
    same_behaviour(end_m, end_o, "streaming")
    whole_m = whole(harmony, ours, tokens, role, strict)
    same_behaviour(whole_m, whole(oh, enc_o, tokens, role, strict), "whole completion")
    same_behaviour(whole_m, end_m, "whole vs streaming")
    return end_m


# --- round trips ---------------------------------------------------------------------------------------


def _expected(message: dict) -> dict:
    """What parsing gives back: one text content holding the concatenated texts; no `name` unless a tool."""
    out = {"role": message["role"], "name": message.get("name") if message["role"] == "tool" else None}
    out["content"] = [{"type": "text", "text": "".join(c["text"] for c in message["content"])}]
    for key in ("channel", "recipient", "content_type"):
        if message.get(key) is not None:
            out[key] = message[key]
    return out


@examples(60)
@given(conv=realistic_conversations())
def test_round_trip_whole_conversation(oracle, ours, conv):
    tokens = ours.render_conversation(build_ours(conv), harmony.RenderConversationConfig(auto_drop_analysis=False))
    kind, parsed = check_parsers(oracle, ours, tokens)
    assert kind == "ok", parsed
    assert len(parsed) == len(conv["messages"])
    for got, sent in zip(parsed, conv["messages"]):
        if sent["role"] not in ("system", "developer"):  # those render their content objects as text
            assert got == _expected(sent)


@examples(60)
@given(conv=realistic_conversations(), strict=st.booleans())
def test_round_trip_assistant_reply(oracle, ours, conv, strict):
    """What a model emits after the prompt's `<|start|>assistant`: its reply, parsed with role=assistant."""
    msgs = conv["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    reply = [m for m in msgs[last_user + 1 :] if m["role"] == "assistant"][:1]
    if not reply:
        return
    tokens = ours.render_conversation_for_training(build_ours({"messages": reply}))
    prefix = [START] + ours.encode("assistant")
    assert tokens[: len(prefix)] == prefix
    kind, parsed = check_parsers(oracle, ours, tokens[len(prefix) :], role="assistant", strict=strict)
    assert kind == "ok" and parsed == [_expected(reply[0])]


def test_streaming_deltas_rebuild_content(ours):
    text = "Bonjour 😀 日本語 — ok"
    tokens = (
        [START] + ours.encode("assistant") + [CHANNEL] + ours.encode("final") + [MESSAGE] + ours.encode(text) + [RETURN]
    )
    parser = harmony.StreamableParser(ours, None)
    deltas = []
    for t in tokens:
        parser.process(t)
        if parser.last_content_delta:
            deltas.append(parser.last_content_delta)
        if parser.state is harmony.StreamState.CONTENT:
            assert parser.current_channel == "final" and parser.current_role is harmony.Role.ASSISTANT
    assert "".join(deltas) == text
    assert parser.messages[0].content[0].text == text


# --- fuzz ------------------------------------------------------------------------------------------------


@st.composite
def token_streams(draw, ours_enc):
    words = st.sampled_from(HEADER_WORDS).map(ours_enc.encode)
    piece = st.one_of(
        st.sampled_from(STRUCTURAL).map(lambda t: [t]),
        words,
        words,
        st.integers(0, N_VOCAB - 1).map(lambda t: [t]),
        # Past the vocabulary. Not N_VOCAB itself: openai-harmony knows a `<|reserved_201088|>` that the
        # model's 201088-row embedding cannot hold; here it is out of range (test_id_201088_is_out_of_range).
        st.sampled_from([N_VOCAB + 1, 300_000, 2**31, 2**32 - 1, 2**32, -1]).map(lambda t: [t]),
    )
    return [t for p in draw(st.lists(piece, max_size=24)) for t in p]


@st.composite
def mutated_renderings(draw, ours_enc):
    """A valid rendering, then cut, spliced or mutated where it hurts."""
    conv = draw(realistic_conversations())
    tokens = ours_enc.render_conversation(build_ours(conv), harmony.RenderConversationConfig(auto_drop_analysis=False))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(
            st.sampled_from(["truncate", "delete", "insert", "drop_message_token", "unknown_role", "drop_prefix"])
        )
        i = draw(st.integers(0, max(0, len(tokens) - 1)))
        if how == "truncate":
            tokens = tokens[:i]
        elif how == "delete":
            tokens = tokens[:i] + tokens[i + 1 :]
        elif how == "insert":
            tokens = (
                tokens[:i] + [draw(st.one_of(st.sampled_from(STRUCTURAL), st.integers(0, N_VOCAB - 1)))] + tokens[i:]
            )
        elif how == "drop_message_token" and MESSAGE in tokens:
            j = draw(st.sampled_from([k for k, t in enumerate(tokens) if t == MESSAGE]))
            tokens = tokens[:j] + tokens[j + 1 :]
        elif how == "unknown_role" and START in tokens:
            j = draw(st.sampled_from([k for k, t in enumerate(tokens) if t == START]))
            tokens = (
                tokens[: j + 1]
                + ours_enc.encode(draw(st.sampled_from(["root", "model", "Assistant", "", " "])))
                + tokens[j + 2 :]
            )
        elif how == "drop_prefix":
            tokens = tokens[i:]
    return tokens


@examples(150)
@given(data=st.data(), role=st.sampled_from([None, None, "assistant", "user", "tool"]), strict=st.booleans())
def test_random_streams_match_oracle(oracle, ours, data, role, strict):
    check_parsers(oracle, ours, data.draw(token_streams(ours)), role, strict)


@examples(80)
@given(data=st.data(), role=st.sampled_from([None, "assistant"]), strict=st.booleans())
def test_mutated_renderings_match_oracle(oracle, ours, data, role, strict):
    tokens = data.draw(mutated_renderings(ours))
    if role is not None and tokens[:1] == [START]:
        tokens = tokens[2:]  # as if the prompt wrote `<|start|>{role}` (its role word is one token)
    check_parsers(oracle, ours, tokens, role, strict)


def test_documented_errors(ours):
    cases = [
        ([START] + ours.encode("root") + [MESSAGE] + ours.encode("x") + [END], "Unknown role: root"),
        ([START] + ours.encode("user") + ours.encode("hi") + [END], None),  # strict: no <|message|> before <|end|>
        (ours.encode("hello"), "expecting start token"),
        ([START] + ours.encode("assistant"), "Unexpected EOS while waiting for message header"),
        ([START, MESSAGE], "did not contain a role"),
        ([START] + ours.encode("assistant") + [CHANNEL, MESSAGE], "no channel value"),
    ]
    for tokens, message in cases:
        try:
            ours.parse_messages_from_completion_tokens(tokens)
        except harmony.HarmonyError as e:
            assert message is None or message in str(e), (tokens, str(e))
        else:
            raise AssertionError(f"parsed {tokens}")


def test_documented_lenient_results(ours):
    # A truncated completion (EOS inside content) is the message so far, as the oracle does.
    tokens = [START] + ours.encode("assistant") + [CHANNEL] + ours.encode("final") + [MESSAGE] + ours.encode("Hel")
    (msg,) = ours.parse_messages_from_completion_tokens(tokens)
    assert msg.content[0].text == "Hel" and msg.channel == "final"
    # Ids past the vocabulary inside content become U+FFFD, not an error.
    tokens = [START] + ours.encode("user") + [MESSAGE, N_VOCAB + 5, END]
    assert ours.parse_messages_from_completion_tokens(tokens)[0].content[0].text == "\ufffd"
    # strict=False: a stop token inside the first header (role given) closes it; the header words are the text.
    msgs = ours.parse_messages_from_completion_tokens(ours.encode("hi") + [END], harmony.Role.ASSISTANT, strict=False)
    assert [(m.author.role, m.content[0].text) for m in msgs] == [(harmony.Role.ASSISTANT, "hi")]


def test_id_201088_is_out_of_range(ours):
    """The one deliberate difference: openai-harmony decodes 201088 as `<|reserved_201088|>`; here, like every
    id past the 201088-row embedding, it is U+FFFD in content and an error in a header."""
    tokens = [START] + ours.encode("user") + [MESSAGE, N_VOCAB, END]
    assert ours.parse_messages_from_completion_tokens(tokens)[0].content[0].text == "\ufffd"
    try:
        ours.parse_messages_from_completion_tokens([START, N_VOCAB, MESSAGE, END])
    except harmony.HarmonyError as e:
        assert "201088" in str(e)
    else:
        raise AssertionError("201088 in a header parsed")
