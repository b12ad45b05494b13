"""Shared by the harmony oracle tests: the openai-harmony fixture, hypothesis strategies, comparison helpers.

The oracle is OpenAI's openai-harmony 0.0.8 (a Rust extension), loaded offline: the fixture writes the
sha256-checked o200k_base.tiktoken into a temp folder and points TIKTOKEN_ENCODINGS_BASE at it. Generated
conversations are plain dicts, built into both our model and the oracle's with `Message.from_dict`, so the
two sides always see the same input. The tests here check the public API surface against the oracle's.
"""

import inspect
import os
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without an install

import harmony  # noqa: E402
from reference.tokenizer import write_o200k_base  # noqa: E402


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """(openai_harmony module, its HarmonyGptOss encoding)."""
    oh = pytest.importorskip("openai_harmony")
    folder = tmp_path_factory.mktemp("o200k")
    write_o200k_base(folder)
    old = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)
    try:
        enc = oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if old is None:
            del os.environ["TIKTOKEN_ENCODINGS_BASE"]
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = old
    return oh, enc


@pytest.fixture(scope="module")
def ours():
    return harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)


def outcome(fn, *args, **kwargs):
    """("ok", value) or ("error", exception): behaviour, not only output, is compared."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the oracle's error types are RuntimeError, ValueError, ...
        return "error", e


def same_behaviour(ours_result, oracle_result, what=""):
    (ko, vo), (kt, vt) = ours_result, oracle_result
    assert ko == kt, f"{what}: ours {ko} {vo!r}, oracle {kt} {vt!r}"
    if ko == "error":
        assert isinstance(vo, harmony.HarmonyError), f"{what}: ours raised {type(vo).__name__}: {vo}"
    else:
        assert vo == vt, what
    return ko


def build_ours(conv: dict) -> harmony.Conversation:
    return harmony.Conversation.from_dict(conv)


def build_oracle(oh, conv: dict):
    return oh.Conversation(messages=[oh.Message.from_dict(m) for m in conv["messages"]])


def messages_as_dicts(messages) -> list[dict]:
    return [m.to_dict() for m in messages]


# --- strategies -----------------------------------------------------------------------------------

SPECIAL_TEXT = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>",
                "<|endoftext|>", "<|reserved_200013|>"]
FRAGMENTS = [*SPECIAL_TEXT, " ", "\n", "\r\n", "\t", "\x0b", "\u00a0", "\u3000", "to=", " to=functions.f",
             "assistant", "user", "final", "analysis", "<", "|>", "😀", "日本語", "e\u0301", "\ufffd", "{}", '"', "\\"]

texts = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=8).map("".join),
)
long_texts = st.sampled_from(["", " ", "word " * 2000, "日本語" * 700, "a" * 5000, "\n" * 300])
any_text = st.one_of(texts, texts, texts, long_texts)
words = st.one_of(st.sampled_from(["analysis", "commentary", "final"]), st.from_regex(r"[a-z_.]{1,12}", fullmatch=True), texts)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)
TYPES = ["object", "string", "number", "integer", "boolean", "array", "null", "weird"]


def schemas(max_leaves=8):
    """JSON Schemas, mostly sensible, sometimes junk where harmony must not choke (it never validates)."""

    def extend(inner):
        props = st.dictionaries(st.one_of(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), texts), inner, max_size=4)
        return st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("object"), "properties": props},
                optional={"required": st.lists(st.one_of(st.from_regex(r"[a-z_]{1,4}", fullmatch=True), json_scalars), max_size=3),
                          "description": texts, "default": json_values},
            ),
            st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner, "description": texts}),
            st.fixed_dictionaries(
                {"oneOf": st.lists(inner, max_size=3)},
                optional={"description": texts, "default": json_values, "nullable": st.booleans(), "title": texts},
            ),
        )

    leaf = st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), max_size=3), json_scalars),
            "description": st.one_of(texts, json_scalars),
            "default": json_values,
            "enum": st.one_of(st.lists(st.one_of(texts, json_scalars), max_size=3), json_scalars),
            "nullable": st.one_of(st.booleans(), json_scalars),
            "title": texts,
            "examples": st.one_of(st.lists(st.one_of(texts, json_scalars), max_size=3), json_scalars),
            "oneOf": st.one_of(json_scalars, st.lists(st.fixed_dictionaries({}, optional={"type": st.sampled_from(TYPES), "description": texts}), max_size=2)),
            "items": st.fixed_dictionaries({}, optional={"type": st.sampled_from(TYPES)}),
        },
    )
    return st.recursive(st.one_of(leaf, json_scalars), extend, max_leaves=max_leaves)


tool_names = st.one_of(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), texts)
tools = st.fixed_dictionaries(
    {"name": tool_names, "description": any_text},
    optional={"parameters": st.one_of(st.none(), schemas())},
)


@st.composite
def namespaces(draw):
    name = draw(st.one_of(st.sampled_from(["functions", "browser", "python", "x"]), tool_names))
    ns = {"name": name, "tools": draw(st.lists(tools, max_size=3))}
    if draw(st.booleans()):
        ns["description"] = draw(any_text)
    return ns


@st.composite
def tool_maps(draw):
    out = {}
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["builtin", "custom", "custom"]))
        if kind == "builtin":
            ns = draw(st.sampled_from([harmony.ToolNamespaceConfig.browser(), harmony.ToolNamespaceConfig.python()])).to_dict()
        else:
            ns = draw(namespaces())
        key = ns["name"] if draw(st.integers(0, 4)) else draw(tool_names)  # the dict key sorts; the name prints
        out[key] = ns
    return out


system_contents = st.fixed_dictionaries(
    {"type": st.just("system_content")},
    optional={
        "model_identity": st.one_of(st.none(), any_text),
        "reasoning_effort": st.one_of(st.none(), st.sampled_from(["Low", "Medium", "High"])),
        "conversation_start_date": st.one_of(st.none(), st.just("2025-08-05"), texts),
        "knowledge_cutoff": st.one_of(st.none(), texts),
        "channel_config": st.one_of(
            st.none(),
            st.fixed_dictionaries({"valid_channels": st.lists(words, max_size=4), "channel_required": st.booleans()}),
        ),
        "tools": st.one_of(st.none(), tool_maps()),
    },
)
developer_contents = st.fixed_dictionaries(
    {"type": st.just("developer_content")},
    optional={"instructions": st.one_of(st.none(), any_text), "tools": st.one_of(st.none(), tool_maps())},
)
text_contents = st.builds(lambda t: {"type": "text", "text": t}, any_text)
ROLES = ["system", "developer", "user", "assistant", "tool"]


@st.composite
def messages(draw, roles=ROLES):
    role = draw(st.sampled_from(roles))
    rich = {"system": system_contents, "developer": developer_contents}.get(role)
    # Mostly the content the role allows; sometimes the other kinds, which both sides must reject.
    if rich is not None and draw(st.integers(0, 4)):
        content = [draw(rich)] + draw(st.lists(text_contents, max_size=1))
    elif draw(st.integers(0, 15)) == 0:
        content = [draw(st.one_of(system_contents, developer_contents))]
    else:
        content = draw(st.lists(text_contents, max_size=3))
    msg = {"role": role, "name": None, "content": content}
    if role == "tool":
        msg["name"] = draw(st.one_of(st.sampled_from(["functions.get_weather", "browser.search", "python"]), tool_names, st.none()) if draw(st.integers(0, 10)) else st.none())
    elif draw(st.integers(0, 6)) == 0:
        msg["name"] = draw(texts)
    if draw(st.booleans()):
        msg["channel"] = draw(words)
    if draw(st.integers(0, 2)) == 0:
        msg["recipient"] = draw(st.one_of(st.sampled_from(["functions.get_weather", "assistant", "all", "python", "browser.search"]), words))
    if draw(st.integers(0, 3)) == 0:
        msg["content_type"] = draw(st.one_of(st.sampled_from(["<|constrain|>json", "json", "<|constrain|>", "code"]), texts))
    return msg


conversations = st.lists(messages(), max_size=8).map(lambda ms: {"messages": ms})


# --- the public surface -----------------------------------------------------------------------------

DROP_IN_NAMES = [
    "load_harmony_encoding", "HarmonyEncodingName", "Conversation", "Message", "Role", "Author", "SystemContent",
    "DeveloperContent", "ReasoningEffort", "ToolDescription", "TextContent", "ToolNamespaceConfig",
    "RenderConversationConfig", "StreamState", "StreamableParser", "HarmonyError", "HarmonyEncoding", "Content",
]
ENCODING_METHODS = [
    "render_conversation_for_completion", "render_conversation_for_training", "render_conversation", "render",
    "parse_messages_from_completion_tokens", "stop_tokens", "stop_tokens_for_assistant_actions", "decode_utf8",
    "encode", "decode", "is_special_token",
]
PARSER_MEMBERS = ["process", "process_eos", "current_role", "current_channel", "current_recipient",
                  "current_content", "current_content_type", "last_content_delta", "messages", "tokens", "state",
                  "state_data"]


def test_drop_in_names_exist(oracle):
    oh, _ = oracle
    for name in DROP_IN_NAMES:
        assert hasattr(oh, name), name  # the list is the oracle's
        assert hasattr(harmony, name), name


def test_method_signatures_match(oracle):
    oh, _ = oracle
    for name in ENCODING_METHODS:
        theirs = inspect.signature(getattr(oh.HarmonyEncoding, name))
        mine = inspect.signature(getattr(harmony.HarmonyEncoding, name))
        assert list(mine.parameters) == list(theirs.parameters), name
        for p in theirs.parameters.values():
            assert mine.parameters[p.name].kind == p.kind, (name, p.name)
            assert (mine.parameters[p.name].default is p.empty) == (p.default is p.empty), (name, p.name)
    for name in PARSER_MEMBERS:
        assert hasattr(oh.StreamableParser, name) and hasattr(harmony.StreamableParser, name), name
    for cls in ["SystemContent", "DeveloperContent", "Message", "Conversation", "ToolNamespaceConfig", "ToolDescription", "Author"]:
        theirs = {n for n in vars(getattr(oh, cls)) if not n.startswith("_") and not n.startswith("model_")}
        missing = {n for n in theirs if not hasattr(getattr(harmony, cls), n)}
        assert not missing, (cls, missing)


def test_enums_and_defaults_match(oracle):
    oh, _ = oracle
    for enum in ["Role", "ReasoningEffort", "StreamState", "HarmonyEncodingName"]:
        assert {(m.name, m.value) for m in getattr(oh, enum)} == {(m.name, m.value) for m in getattr(harmony, enum)}
    assert oh.SystemContent.new().to_dict() == harmony.SystemContent.new().to_dict()
    assert oh.DeveloperContent.new().to_dict() == harmony.DeveloperContent.new().to_dict()
    assert oh.RenderConversationConfig().auto_drop_analysis is harmony.RenderConversationConfig().auto_drop_analysis


def test_builtin_tool_namespaces_match(oracle):
    oh, _ = oracle
    for name in ["browser", "python"]:
        theirs = getattr(oh.ToolNamespaceConfig, name)().model_dump()
        mine = getattr(harmony.ToolNamespaceConfig, name)().to_dict()
        theirs["tools"] = [{k: v for k, v in t.items() if v is not None} for t in theirs["tools"]]
        assert mine == theirs


def test_harmony_error_is_value_and_runtime_error():
    assert issubclass(harmony.HarmonyError, ValueError) and issubclass(harmony.HarmonyError, RuntimeError)


def test_role_hierarchy_is_explicit():
    order = sorted(harmony.Role, key=lambda r: r.authority, reverse=True)
    assert [r.value for r in order] == ["system", "developer", "user", "assistant", "tool"]
    with pytest.raises(harmony.HarmonyError, match="Unknown role"):
        harmony.Role("root")
