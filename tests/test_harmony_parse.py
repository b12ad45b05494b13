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

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import harmony
from harmony.render import CALL, CHANNEL, CONSTRAIN, END, MESSAGE, RETURN, START
from harmony_helpers import build_ours, examples, outcome, realistic_conversations, same_behaviour

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


# --- integer-like tokens ---------------------------------------------------------------------------------


class _Index:
    """Any object with __index__ is a token id to openai-harmony (PyO3 reads a u32 through it)."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class _IntOnly:
    """__int__ without __index__: not an integer to openai-harmony (a float has __int__ too)."""

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


def _token_forms():
    """(name, value put in place of one content token, does openai-harmony accept it). The oracle's decisions are
    asserted too, so this table is also their documentation."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    return [
        ("int", 5, True),
        ("np.int64", np.int64(5), True),
        ("np.uint8", np.uint8(5), True),
        ("np.uint64", np.uint64(5), True),
        ("0-d np array", np.array(5), True),
        ("0-d tensor", torch.tensor(5), True),
        ("0-d int32 tensor", torch.tensor(5, dtype=torch.int32), True),
        ("1-element tensor", torch.tensor([5]), True),  # torch's __index__ takes any one-element integer tensor
        ("__index__ object", _Index(5), True),
        ("True", True, True),  # a bool is an int with __index__: the oracle reads True as token 1
        ("False", False, True),
        ("0-d bool tensor", torch.tensor(True), True),
        ("largest u32", 2**32 - 1, True),  # past the vocabulary: U+FFFD in content
        ("past the vocabulary", 300_000, True),
        ("np.bool_", np.bool_(True), False),  # numpy's bool has no __index__
        ("1-element np array", np.array([5]), False),  # numpy's __index__ takes 0-d arrays only
        ("float", 5.0, False),
        ("np.float64", np.float64(5.0), False),
        ("0-d float tensor", torch.tensor(5.0), False),
        ("__int__ only", _IntOnly(5), False),
        ("str", "5", False),
        ("None", None, False),
        ("-1", -1, False),
        ("np.int64(-1)", np.int64(-1), False),
        ("0-d tensor -1", torch.tensor(-1), False),
        ("2**32", 2**32, False),
        ("np.int64(2**32)", np.int64(2**32), False),
        ("2**64", 2**64, False),
    ]


def _messages_or_error(fn, *args):
    r = outcome(fn, *args)
    return r if r[0] == "error" else ("ok", [m.to_dict() for m in r[1]])


def _fed(mod, enc, tokens):
    """Tokens fed one at a time with process(): ("ok", what the parser holds) or ("error", e)."""
    parser = mod.StreamableParser(enc, None)
    for t in tokens:
        step = outcome(parser.process, t)
        if step[0] == "error":
            return step
    state = (parser.tokens, parser.state_data, parser.current_content, parser.last_content_delta)
    parser.process_eos()
    return "ok", state + ([m.to_dict() for m in parser.messages],)


def _refused_clearly(result, what):
    if result[0] == "error":
        assert isinstance(result[1], harmony.HarmonyError), f"{what}: {result[1]!r}"
        assert "\n" not in str(result[1]), f"{what}: error is not one line: {result[1]}"


def test_integer_like_tokens_match_oracle(oracle, ours):
    """Each form, in the whole-completion parser and in process(), accepted or refused exactly as the oracle does
    (ours with a one-line HarmonyError)."""
    oh, enc_o = oracle
    base = [START] + ours.encode("assistant") + [CHANNEL] + ours.encode("final") + [MESSAGE] + ours.encode("a b")
    for name, value, accepted in _token_forms():
        tokens = base[:-1] + [value] + base[-1:] + [RETURN]
        mine = _messages_or_error(ours.parse_messages_from_completion_tokens, tokens)
        theirs = _messages_or_error(enc_o.parse_messages_from_completion_tokens, tokens)
        assert (theirs[0] == "ok") == accepted, f"{name}: the oracle's parse gave {theirs}"
        same_behaviour(mine, theirs, f"{name} (parse)")
        _refused_clearly(mine, name)
        mine, theirs = _fed(harmony, ours, tokens), _fed(oh, enc_o, tokens)
        assert (theirs[0] == "ok") == accepted, f"{name}: the oracle's process() gave {theirs}"
        same_behaviour(mine, theirs, f"{name} (process)")
        _refused_clearly(mine, name)


def test_token_sequences_from_numpy_and_torch_match_oracle(oracle, ours):
    """Whole sequences as numpy arrays and torch tensors, and every token as a numpy scalar or a 0-d tensor."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    oh, enc_o = oracle
    toks = [START] + ours.encode("assistant") + [CHANNEL] + ours.encode("final") + [MESSAGE] + ours.encode("hé 😀")
    toks += [RETURN]
    forms = [
        ("np.array", np.array(toks), True),
        ("np.array int32", np.array(toks, dtype=np.int32), True),
        ("np.array uint64", np.array(toks, dtype=np.uint64), True),
        ("list of np.int64", [np.int64(t) for t in toks], True),
        ("torch.tensor", torch.tensor(toks), True),
        ("torch.tensor int32", torch.tensor(toks, dtype=torch.int32), True),
        ("list of 0-d tensors", list(torch.tensor(toks)), True),
        ("(N, 1) tensor", torch.tensor(toks)[:, None], True),  # each row is a one-element tensor
        ("tuple", tuple(toks), True),
        ("__index__ objects", [_Index(t) for t in toks], True),
        ("(N, 1) np.array", np.array(toks)[:, None], False),
        ("float np.array", np.array(toks, dtype=np.float64), False),
        ("float tensor", torch.tensor(toks, dtype=torch.float32), False),
        ("bool np.array", np.array(toks) > 0, False),
        ("str", "<|start|>", False),
        ("0-d np.array", np.array(START), False),
        ("an int", START, False),
        ("None", None, False),
    ]
    expected = _messages_or_error(enc_o.parse_messages_from_completion_tokens, toks)
    for name, form, accepted in forms:
        mine = _messages_or_error(ours.parse_messages_from_completion_tokens, form)
        theirs = _messages_or_error(enc_o.parse_messages_from_completion_tokens, form)
        assert (theirs[0] == "ok") == accepted, f"{name}: the oracle gave {theirs}"
        same_behaviour(mine, theirs, name)
        _refused_clearly(mine, name)
        if accepted:
            assert mine == expected, name
            same_behaviour(_fed(harmony, ours, form), _fed(oh, enc_o, form), f"{name} (process)")
    gen = _messages_or_error(ours.parse_messages_from_completion_tokens, (t for t in toks))
    assert gen == expected, "a generator"


def test_long_backlog_of_invalid_bytes_matches_oracle(oracle, ours):
    """Invalid bytes leave a backlog (one U+FFFD per token; the bytes after it wait), here longer than the 256-byte
    prefix the parser first decodes, with multi-byte characters across the prefix's edge: every delta as the
    oracle's."""
    invalid = 2203  # b"\x82\xac": two lone continuation bytes
    head = [START] + ours.encode("assistant") + [CHANNEL] + ours.encode("final") + [MESSAGE]
    for n_invalid in (255, 300):
        for text in ("é😀 a" * 150, "x" * 700 + "日本語" * 100):
            content = [invalid] * n_invalid + ours.encode(text) + [invalid] * 3 + ours.encode(text) + [invalid]
            check_parsers(oracle, ours, head + content + [END])


# --- linear time ----------------------------------------------------------------------------------------------


def _timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _parse_all(enc, tokens):
    return [m.to_dict() for m in enc.parse_messages_from_completion_tokens(tokens)]


def _stream_all(mod, enc, tokens):
    """Feed every token, reading the delta as a streaming client does; the last content and delta before the stop."""
    parser = mod.StreamableParser(enc, None)
    for t in tokens[:-1]:
        parser.process(t)
        parser.last_content_delta  # noqa: B018 - read, as a client does
    before = (parser.current_content, parser.last_content_delta)
    parser.process(tokens[-1])
    return before, parser.last_content_delta, [m.to_dict() for m in parser.messages]


def test_parsing_long_completions_is_linear(oracle, ours):
    """320k content tokens parse within 20x openai-harmony's time (+1 s) measured in the same run, for the
    whole-completion parser and for process() per token, with the oracle's results; and 8x more tokens take well
    under quadratic's 64x. Also after an id past the vocabulary (the rest of the message is one U+FFFD: nothing
    more to decode), and for tokens of two invalid bytes each (one U+FFFD per token: a backlog of undecoded bytes
    as long as the message; there the oracle is itself superlinear, 15 s for 320k streamed, so it is compared at
    40k only)."""
    oh, enc_o = oracle
    head = [START] + ours.encode("assistant") + [CHANNEL] + ours.encode("final") + [MESSAGE]
    (word,) = ours.encode(" hello")
    invalid = 2203
    assert harmony.tokenizer.get_tokenizer().decode_single_token_bytes(invalid) == b"\x82\xac"  # continuation bytes
    for name, prefix, word, oracle_at_320k in [
        ("text", [], word, True),
        ("after an id past the vocabulary", [N_VOCAB + 5], word, True),
        ("invalid UTF-8", [], invalid, False),
    ]:
        def completion(n):
            return head + prefix + [word] * n + [RETURN]

        small, big = completion(40_000), completion(320_000)
        for what, fn_m, fn_o in [
            ("whole", lambda t: _parse_all(ours, t), lambda t: _parse_all(enc_o, t)),
            ("streaming", lambda t: _stream_all(harmony, ours, t), lambda t: _stream_all(oh, enc_o, t)),
        ]:
            t_ours, mine = _timed(fn_m, big)
            if oracle_at_320k:
                t_oracle, theirs = _timed(fn_o, big)
                assert mine == theirs, f"{name} {what}"
                assert t_ours < 20 * t_oracle + 1, f"{name} {what}: ours {t_ours:.2f} s, oracle {t_oracle:.2f} s"
            else:
                assert fn_m(small) == fn_o(small), f"{name} {what}"
            t_small = min(_timed(fn_m, small)[0] for _ in range(2))
            assert t_ours < 20 * t_small, f"{name} {what}: 40k tokens {t_small:.3f} s, 320k {t_ours:.3f} s"
