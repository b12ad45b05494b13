"""harmony's public surface against openai-harmony 0.0.8's: the names, the encoding's and the parser's method
signatures, the enums and defaults, the built-in tool namespaces (harmony/README.md, "Drop-in for openai_harmony")."""

import inspect
from typing import TypeVar

import pytest

import harmony

DROP_IN_NAMES = [
    "load_harmony_encoding",
    "HarmonyEncodingName",
    "Conversation",
    "Message",
    "Role",
    "Author",
    "SystemContent",
    "DeveloperContent",
    "ReasoningEffort",
    "ToolDescription",
    "TextContent",
    "ToolNamespaceConfig",
    "RenderConversationConfig",
    "StreamState",
    "StreamableParser",
    "HarmonyError",
    "HarmonyEncoding",
    "Content",
    "ChannelConfig",
    "RenderOptions",
    "raise_disallowed_special_token",
]
ENCODING_METHODS = [
    "render_conversation_for_completion",
    "render_conversation_for_training",
    "render_conversation",
    "render",
    "parse_messages_from_completion_tokens",
    "stop_tokens",
    "stop_tokens_for_assistant_actions",
    "decode_utf8",
    "encode",
    "decode",
    "is_special_token",
]
PARSER_MEMBERS = [
    "process",
    "process_eos",
    "current_role",
    "current_channel",
    "current_recipient",
    "current_content",
    "current_content_type",
    "last_content_delta",
    "messages",
    "tokens",
    "state",
    "state_data",
]


def test_drop_in_names_exist(oracle):
    oh, _ = oracle
    # Every public class and function openai_harmony defines (typing helpers and imports excluded).
    public = {
        n
        for n in dir(oh)
        if not n.startswith("_")
        and not isinstance(getattr(oh, n), TypeVar)
        and getattr(getattr(oh, n), "__module__", None) == "openai_harmony"
    }
    assert set(DROP_IN_NAMES) <= public, set(DROP_IN_NAMES) - public  # the list is the oracle's
    missing = sorted(n for n in public if not hasattr(harmony, n))
    assert not missing, f"openai_harmony names harmony does not offer: {missing}"
    assert set(oh.__all__) <= set(harmony.__all__)


def test_method_signatures_match(oracle):
    oh, _ = oracle
    for name in ENCODING_METHODS:
        theirs = inspect.signature(getattr(oh.HarmonyEncoding, name))
        mine = inspect.signature(getattr(harmony.HarmonyEncoding, name))
        assert list(mine.parameters) == list(theirs.parameters), name
        for p in theirs.parameters.values():
            assert mine.parameters[p.name].kind == p.kind, (name, p.name)
            assert (mine.parameters[p.name].default is p.empty) == (p.default is p.empty), (name, p.name)
    theirs, mine = inspect.signature(oh.StreamableParser.__init__), inspect.signature(harmony.StreamableParser.__init__)
    assert [(p.name, p.kind) for p in mine.parameters.values()] == [(p.name, p.kind) for p in theirs.parameters.values()]
    for name in ["name", "special_tokens_set"]:
        assert hasattr(oh.HarmonyEncoding, name) and hasattr(harmony.HarmonyEncoding, name), name
    for name in PARSER_MEMBERS:
        assert hasattr(oh.StreamableParser, name) and hasattr(harmony.StreamableParser, name), name
    for cls in [
        "SystemContent",
        "DeveloperContent",
        "Message",
        "Conversation",
        "ToolNamespaceConfig",
        "ToolDescription",
        "Author",
    ]:
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
