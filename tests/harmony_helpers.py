"""Shared by the harmony oracle tests: the openai-harmony fixture, hypothesis strategies, comparison helpers.

The oracle is OpenAI's openai-harmony 0.0.8 (a Rust extension), loaded offline: the fixture writes the
sha256-checked o200k_base.tiktoken into a temp folder and points TIKTOKEN_ENCODINGS_BASE at it. Generated
conversations are plain dicts, built into both our model and the oracle's with `Message.from_dict`, so the
two sides always see the same input: `conversations` is anything the model classes accept (junk included, where
both sides must raise alike), `realistic_conversations` what applications send (every one must render).
Its fixtures (`oracle`, `ours`) reach every test module through tests/conftest.py's pytest_plugins.
"""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without an install

import harmony  # noqa: E402
from reference.tokenizer import write_o200k_base  # noqa: E402


# Example counts are sized for CI (2 shared cores); HARMONY_EXAMPLES=20 multiplies them for a deep local run.
EXAMPLES_SCALE = float(os.environ.get("HARMONY_EXAMPLES", "1"))


def examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * EXAMPLES_SCALE)))


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


def same_behaviour(ours_result, oracle_result, what="", compare_values=True):
    """Both raised (ours a HarmonyError) or both returned equal values; returns "ok" or "error"."""
    (ko, vo), (kt, vt) = ours_result, oracle_result
    assert ko == kt, f"{what}: ours {ko} {vo!r:.2000}, oracle {kt} {vt!r:.2000}"
    if ko == "error":
        assert isinstance(vo, harmony.HarmonyError), f"{what}: ours raised {type(vo).__name__}: {vo}"
    elif compare_values:
        assert vo == vt, what
    return ko


def build_ours(conv: dict) -> harmony.Conversation:
    return harmony.Conversation.from_dict(conv)


def build_oracle(oh, conv: dict):
    return oh.Conversation(messages=[oh.Message.from_dict(m) for m in conv["messages"]])


def messages_as_dicts(messages) -> list[dict]:
    return [m.to_dict() for m in messages]


# --- strategies -----------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
    "<|endoftext|>",
    "<|reserved_200013|>",
]
FRAGMENTS = [
    *SPECIAL_TEXT,
    " ",
    "\n",
    "\r\n",
    "\t",
    "\x0b",
    "\u00a0",
    "\u3000",
    "to=",
    " to=functions.f",
    "assistant",
    "user",
    "final",
    "analysis",
    "<",
    "|>",
    "😀",
    "日本語",
    "e\u0301",
    "\ufffd",
    "{}",
    '"',
    "\\",
]

texts = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=8).map("".join),
)
long_texts = st.sampled_from(["", " ", "word " * 2000, "日本語" * 700, "a" * 5000, "\n" * 300])
any_text = st.one_of(texts, texts, texts, long_texts)
words = st.one_of(
    st.sampled_from(["analysis", "commentary", "final"]), st.from_regex(r"[a-z_.]{1,12}", fullmatch=True), texts
)

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
        props = st.dictionaries(
            st.one_of(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), texts), inner, max_size=4
        )
        return st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("object"), "properties": props},
                optional={
                    "required": st.lists(
                        st.one_of(st.from_regex(r"[a-z_]{1,4}", fullmatch=True), json_scalars), max_size=3
                    ),
                    "description": texts,
                    "default": json_values,
                },
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
            "oneOf": st.one_of(
                json_scalars,
                st.lists(
                    st.fixed_dictionaries({}, optional={"type": st.sampled_from(TYPES), "description": texts}),
                    max_size=2,
                ),
            ),
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
            ns = draw(
                st.sampled_from([harmony.ToolNamespaceConfig.browser(), harmony.ToolNamespaceConfig.python()])
            ).to_dict()
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
        msg["name"] = draw(
            st.one_of(st.sampled_from(["functions.get_weather", "browser.search", "python"]), tool_names, st.none())
            if draw(st.integers(0, 10))
            else st.none()
        )
    elif draw(st.integers(0, 6)) == 0:
        msg["name"] = draw(texts)
    if draw(st.booleans()):
        msg["channel"] = draw(words)
    if draw(st.integers(0, 2)) == 0:
        msg["recipient"] = draw(
            st.one_of(st.sampled_from(["functions.get_weather", "assistant", "all", "python", "browser.search"]), words)
        )
    if draw(st.integers(0, 3)) == 0:
        msg["content_type"] = draw(
            st.one_of(st.sampled_from(["<|constrain|>json", "json", "<|constrain|>", "code"]), texts)
        )
    return msg


conversations = st.lists(messages(), max_size=8).map(lambda ms: {"messages": ms})


# --- realistic conversations: what an application really sends (every example must render) ----------

prop_names = st.from_regex(r"[a-z][a-zA-Z0-9_]{0,10}", fullmatch=True)
short_texts = st.one_of(
    st.sampled_from(["", "The city.", "Units: 'c' or 'f'.", "日本語の説明", "a\nmulti-line\ndescription"]), texts
)


@st.composite
def _with_common(draw, schema: dict, default=None):
    """Adds description / title / nullable / default, each sometimes."""
    if draw(st.booleans()):
        schema["description"] = draw(short_texts)
    if draw(st.integers(0, 4)) == 0:
        schema["title"] = draw(short_texts)
    if draw(st.integers(0, 3)) == 0:
        schema["nullable"] = True
    if default is not None and draw(st.integers(0, 2)) == 0:
        schema["default"] = draw(default)
    return schema


@st.composite
def leaf_schemas(draw):
    kind = draw(st.sampled_from(["string", "enum", "number", "integer", "boolean", "union", "null"]))
    if kind == "string":
        s = {"type": "string"}
        if draw(st.integers(0, 3)) == 0:
            s["examples"] = draw(st.lists(short_texts, min_size=1, max_size=2))
        return draw(_with_common(s, short_texts))
    if kind == "enum":
        values = draw(st.lists(st.one_of(prop_names, short_texts), min_size=1, max_size=4))
        return draw(_with_common({"type": "string", "enum": values}, st.sampled_from(values)))
    if kind in ("number", "integer"):
        nums = st.one_of(
            st.integers(-(10**6), 10**6),
            st.floats(-1e20, 1e20, allow_nan=False),
            st.sampled_from([0.5, 1e-7, 1e16, 1e17]),
        )
        return draw(_with_common({"type": kind}, nums))
    if kind == "boolean":
        return draw(_with_common({"type": "boolean"}, st.booleans()))
    if kind == "union":
        return draw(
            _with_common(
                {
                    "type": draw(
                        st.lists(
                            st.sampled_from(["string", "number", "integer", "null", "boolean"]),
                            min_size=1,
                            max_size=3,
                            unique=True,
                        )
                    )
                }
            )
        )
    return {"type": "null"}


def typed_schemas(max_leaves=6):
    """Schemas as applications write them: nested objects, arrays, enums, defaults, descriptions, nullable, oneOf."""

    def extend(inner):
        @st.composite
        def obj(draw):
            props = draw(st.dictionaries(prop_names, inner, max_size=4))
            out = {"type": "object", "properties": props}
            if props and draw(st.booleans()):
                out["required"] = draw(st.lists(st.sampled_from(sorted(props)), unique=True))
            return draw(_with_common(out))

        @st.composite
        def array(draw):
            return draw(
                _with_common({"type": "array", "items": draw(inner)} if draw(st.integers(0, 5)) else {"type": "array"})
            )

        @st.composite
        def one_of(draw):
            return draw(_with_common({"oneOf": draw(st.lists(inner, min_size=1, max_size=3))}, json_values))

        return st.one_of(obj(), array(), one_of())

    return st.recursive(leaf_schemas(), extend, max_leaves=max_leaves)


@st.composite
def function_tools(draw):
    params = draw(
        st.one_of(
            st.none(),
            typed_schemas().map(
                lambda s: s if s.get("type") == "object" else {"type": "object", "properties": {"arg": s}}
            ),
        )
    )
    tool = {"name": draw(prop_names), "description": draw(short_texts)}
    if params is not None:
        tool["parameters"] = params
    return tool


@st.composite
def realistic_system(draw):
    sc = {"type": "system_content"}
    for key, values in [
        (
            "model_identity",
            st.one_of(st.none(), st.just("You are ChatGPT, a large language model trained by OpenAI."), short_texts),
        ),
        ("reasoning_effort", st.sampled_from([None, "Low", "Medium", "High"])),
        ("conversation_start_date", st.one_of(st.none(), st.dates().map(str))),
        ("knowledge_cutoff", st.sampled_from([None, "2024-06", "2023-10"])),
        (
            "channel_config",
            st.one_of(
                st.none(),
                st.builds(
                    lambda cs, r: {"valid_channels": cs, "channel_required": r},
                    st.lists(st.sampled_from(["analysis", "commentary", "final"]), unique=True),
                    st.booleans(),
                ),
            ),
        ),
    ]:
        if draw(st.booleans()):
            sc[key] = draw(values)
    builtin = draw(st.sets(st.sampled_from(["browser", "python"])))
    if builtin:
        sc["tools"] = {n: getattr(harmony.ToolNamespaceConfig, n)().to_dict() for n in sorted(builtin)}
    return {"role": "system", "name": None, "content": [sc]}


@st.composite
def realistic_developer(draw):
    dc = {"type": "developer_content"}
    if draw(st.booleans()):
        dc["instructions"] = draw(any_text)
    tools = draw(st.lists(function_tools(), max_size=3, unique_by=lambda t: t["name"]))
    if tools or draw(st.booleans()):
        dc["tools"] = {"functions": {"name": "functions", "tools": tools}}
    return {"role": "developer", "name": None, "content": [dc]}


def _text(t):
    return [{"type": "text", "text": t}]


@st.composite
def turns(draw, tool_names=("get_weather",)):
    """One user turn and the assistant's reply: reasoning, tool calls and results, a final answer."""
    out = [{"role": "user", "name": None, "content": _text(draw(any_text))}]
    for _ in range(draw(st.integers(0, 3))):
        step = draw(st.sampled_from(["analysis", "preamble", "function", "browser", "python"]))
        if step == "analysis":
            out.append({"role": "assistant", "name": None, "content": _text(draw(any_text)), "channel": "analysis"})
        elif step == "preamble":
            out.append({"role": "assistant", "name": None, "content": _text(draw(texts)), "channel": "commentary"})
        else:
            target = {
                "function": f"functions.{draw(st.sampled_from(tool_names))}",
                "browser": "browser.search",
                "python": "python",
            }[step]
            call = {
                "role": "assistant",
                "name": None,
                "content": _text(draw(st.one_of(json_values.map(to_json_text), texts))),
                "channel": draw(st.sampled_from(["commentary", "analysis"])),
                "recipient": target,
            }
            ct = draw(st.sampled_from(["<|constrain|>json", "json", None]))
            if ct is not None:
                call["content_type"] = ct
            out.append(call)
            out.append(
                {
                    "role": "tool",
                    "name": target,
                    "content": _text(draw(any_text)),
                    "channel": "commentary",
                    "recipient": "assistant",
                }
            )
    if draw(st.integers(0, 4)):
        out.append({"role": "assistant", "name": None, "content": _text(draw(any_text)), "channel": "final"})
    return out


def to_json_text(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


@st.composite
def realistic_conversations(draw):
    msgs = []
    if draw(st.integers(0, 5)):
        msgs.append(draw(realistic_system()))
    names = ("get_weather",)
    if draw(st.integers(0, 2)):
        dev = draw(realistic_developer())
        msgs.append(dev)
        fns = dev["content"][0].get("tools", {}).get("functions", {}).get("tools", [])
        names = tuple(t["name"] for t in fns) or names
    for _ in range(draw(st.integers(1, 3))):
        msgs += draw(turns(names))
    return {"messages": msgs}


# --- the documented example (openai/harmony docs/format.md) --------------------------------------

def weather_conversation(mod):
    """The tool-call example of openai/harmony docs/format.md, built with mod's classes (ours or the oracle's)."""
    tool = mod.ToolDescription.new(
        "get_current_weather",
        "Gets the current weather in the provided location.",
        parameters={
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
            "required": ["location"],
        },
    )
    return mod.Conversation.from_messages(
        [
            mod.Message.from_role_and_content(
                mod.Role.SYSTEM,
                mod.SystemContent.new()
                .with_reasoning_effort(mod.ReasoningEffort.HIGH)
                .with_conversation_start_date("2025-06-28"),
            ),
            mod.Message.from_role_and_content(
                mod.Role.DEVELOPER,
                mod.DeveloperContent.new().with_instructions("Always respond in riddles").with_function_tools([tool]),
            ),
            mod.Message.from_role_and_content(mod.Role.USER, "What is the weather like in SF?"),
            mod.Message.from_role_and_content(
                mod.Role.ASSISTANT, "Need to use function get_current_weather."
            ).with_channel("analysis"),
            mod.Message.from_role_and_content(mod.Role.ASSISTANT, '{"location":"San Francisco"}')
            .with_channel("commentary")
            .with_recipient("functions.get_current_weather")
            .with_content_type("<|constrain|>json"),
            mod.Message.from_author_and_content(
                mod.Author.new(mod.Role.TOOL, "functions.get_current_weather"), '{"sunny": true, "temperature": 20}'
            )
            .with_channel("commentary")
            .with_recipient("assistant"),
        ]
    )


EXPECTED_WEATHER_PROMPT = """<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
Knowledge cutoff: 2024-06
Current date: 2025-06-28

Reasoning: high

# Valid channels: analysis, commentary, final. Channel must be included for every message.
Calls to these tools must go to the commentary channel: 'functions'.<|end|><|start|>developer<|message|># Instructions

Always respond in riddles

# Tools

## functions

namespace functions {

// Gets the current weather in the provided location.
type get_current_weather = (_: {
// The city and state, e.g. San Francisco, CA
location: string,
format?: "celsius" | "fahrenheit", // default: celsius
}) => any;

} // namespace functions<|end|><|start|>user<|message|>What is the weather like in SF?<|end|><|start|>assistant<|channel|>analysis<|message|>Need to use function get_current_weather.<|end|><|start|>assistant to=functions.get_current_weather<|channel|>commentary <|constrain|>json<|message|>{"location":"San Francisco"}<|call|><|start|>functions.get_current_weather to=assistant<|channel|>commentary<|message|>{"sunny": true, "temperature": 20}<|end|><|start|>assistant"""
