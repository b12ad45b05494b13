"""harmony.build (the Pythonic API) renders exactly what the drop-in classes render; its refusals are clear.
Also: HarmonyEncoding.encode/decode against the oracle, and a parser fuzz that needs no oracle (so the
never-crash, never-hang property is checked even where openai-harmony is not installed)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import harmony
from harmony import build as h
from harmony.render import CALL, CHANNEL, END, MESSAGE, RETURN, START
from harmony_helpers import (
    EXPECTED_WEATHER_PROMPT,
    SPECIAL_TEXT,
    examples,
    outcome,
    same_behaviour,
    texts,
    weather_conversation,
)

WEATHER = h.function(
    "get_current_weather",
    "Gets the current weather in the provided location.",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["location"],
    },
)


def test_builders_render_as_the_drop_in(ours):
    messages = [
        h.system(reasoning="high", date="2025-06-28"),
        h.developer("Always respond in riddles", functions=[WEATHER]),
        h.user("What is the weather like in SF?"),
        h.assistant("Need to use function get_current_weather.", channel="analysis"),
        h.assistant(
            '{"location":"San Francisco"}', channel="commentary", to="functions.get_current_weather", json=True
        ),
        h.tool_result("functions.get_current_weather", '{"sunny": true, "temperature": 20}'),
    ]
    tokens = h.prompt(messages)
    assert tokens == ours.render_conversation_for_completion(weather_conversation(harmony), harmony.Role.ASSISTANT)
    assert ours.decode_utf8(tokens) == EXPECTED_WEATHER_PROMPT


def test_system_defaults_are_the_drop_in_defaults(ours):
    drop_in = harmony.Message.from_role_and_content(harmony.Role.SYSTEM, harmony.SystemContent.new())
    assert ours.render(h.system()) == ours.render(drop_in)
    tools = harmony.SystemContent.new().with_browser_tool().with_python_tool()
    assert ours.render(h.system(browser=True, python=True)) == ours.render(
        harmony.Message.from_role_and_content("system", tools)
    )


def test_parse_reads_a_reply():
    enc = harmony.load_harmony_encoding()
    reply = (
        [CHANNEL]
        + enc.encode("analysis")
        + [MESSAGE]
        + enc.encode("Think.")
        + [END]
        + [START]
        + enc.encode("assistant")
        + [CHANNEL]
        + enc.encode("final")
        + [MESSAGE]
        + enc.encode("Done.")
        + [RETURN]
    )
    got = [(m.channel, m.content[0].text) for m in h.parse(reply)]
    assert got == [("analysis", "Think."), ("final", "Done.")]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: h.system(reasoning="extreme"), "reasoning must be low, medium or high"),
        (lambda: h.system(channels=["analysis", "thoughts"]), "channel 'thoughts'"),
        (lambda: h.assistant("x", channel="private"), "channel 'private'"),
        (lambda: h.assistant("{}", json=True), "give the tool in `to=`"),
        (lambda: h.tool_result("", "42"), "needs the tool's name"),
        (lambda: h.function("f", "d", parameters="not a schema"), "JSON Schema"),
        (lambda: h.user(42), "content must be str"),
        (lambda: harmony.TextContent(text=None), "TextContent.text must be str"),
        (lambda: h.prompt([h.user("hi")], next_role="root"), "next_role"),
    ],
)
def test_builder_refusals(make, message):
    with pytest.raises(harmony.HarmonyError, match=message):
        make()


def test_role_hierarchy():
    assert harmony.ROLE_HIERARCHY == tuple(sorted(harmony.Role, key=lambda r: r.authority, reverse=True))
    assert [r.value for r in harmony.ROLE_HIERARCHY] == ["system", "developer", "user", "assistant", "tool"]
    assert harmony.Role.SYSTEM.outranks(harmony.Role.DEVELOPER) and harmony.Role.USER.outranks("tool")
    assert not harmony.Role.TOOL.outranks(harmony.Role.ASSISTANT) and not harmony.Role.USER.outranks("user")


# --- encode / decode as the oracle ---------------------------------------------------------------------


@examples(60)
@given(text=texts, allowed=st.sets(st.sampled_from(SPECIAL_TEXT)), mode=st.sampled_from(["default", "plain", "all"]))
def test_encode_matches_oracle(oracle, ours, text, allowed, mode):
    _, enc_o = oracle
    kwargs = {
        "default": {"allowed_special": allowed},
        "plain": {"allowed_special": allowed, "disallowed_special": ()},
        "all": {"allowed_special": "all"},
    }[mode]
    mine = outcome(ours.encode, text, **kwargs)
    if same_behaviour(mine, outcome(enc_o.encode, text, **kwargs), f"encode {mode}") == "ok":
        same_behaviour(outcome(ours.decode_utf8, mine[1]), outcome(enc_o.decode_utf8, mine[1]), "decode_utf8")
        assert ours.decode(mine[1]) == enc_o.decode(mine[1]) == text


@examples(60)
@given(tokens=st.lists(st.integers(0, 201087), max_size=8))
def test_decode_matches_oracle(oracle, ours, tokens):
    _, enc_o = oracle
    same_behaviour(outcome(ours.decode_utf8, tokens), outcome(enc_o.decode_utf8, tokens), "decode_utf8")
    assert ours.decode(tokens) == enc_o.decode(tokens)
    assert [ours.is_special_token(t) for t in tokens] == [enc_o.is_special_token(t) for t in tokens]


# --- parser fuzz without the oracle --------------------------------------------------------------------

ANY_TOKEN = st.one_of(
    st.sampled_from([START, END, MESSAGE, CHANNEL, RETURN, CALL, 200003, 199999]),
    st.integers(0, 201087),
    st.integers(-(2**40), 2**40),
)


@examples(150)
@given(tokens=st.lists(ANY_TOKEN, max_size=60), role=st.sampled_from([None, "assistant", "tool"]), strict=st.booleans())
def test_parser_never_crashes(ours, tokens, role, strict):
    """Any token stream: messages, or a HarmonyError naming the position; streaming and whole parsing agree."""
    role = None if role is None else harmony.Role(role)
    whole = outcome(ours.parse_messages_from_completion_tokens, tokens, role, strict=strict)
    if whole[0] == "error":
        assert isinstance(whole[1], harmony.HarmonyError), repr(whole[1])
        assert whole[1].position is None or 0 <= whole[1].position <= len(tokens)
    parser = harmony.StreamableParser(ours, role, strict=strict)

    def feed():
        for t in tokens:
            parser.process(t)
        parser.process_eos()

    streamed = outcome(feed)
    assert streamed[0] == whole[0], (streamed, whole)
    if whole[0] == "ok":
        assert [m.to_dict() for m in parser.messages] == [m.to_dict() for m in whole[1]]


# Not True: openai-harmony reads a bool as token 0 or 1 (test_harmony_parse.py::test_integer_like_tokens_match_oracle).
@pytest.mark.parametrize("bad", [None, "200006", 1.5, [1]])
def test_parser_rejects_non_integer_tokens(ours, bad):
    with pytest.raises(harmony.HarmonyError, match="token must be an int"):
        harmony.StreamableParser(ours, None).process(bad)
