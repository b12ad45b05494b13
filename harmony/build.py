"""The Pythonic API: keyword-argument builders for messages, and one-call prompt rendering and parsing.

What it is: shorthand over the drop-in classes (chat.py). Every builder returns an ordinary `Message`, so both
styles mix freely and render identically (tests/test_harmony_build.py checks the documented tool-call example
token for token). What it is not: a second format. Choices the model never saw in training are refused here
with a HarmonyError (an unknown channel, reasoning level or role), where the drop-in API passes them through
as openai-harmony does.

    from harmony import build as h
    tokens = h.prompt([
        h.system(reasoning="high", date="2025-06-28"),
        h.developer("Answer in French.", functions=[h.function("get_weather", "Weather now.", {"type": "object"})]),
        h.user("Quel temps fait-il ?"),
    ])
    reply = h.parse(completion_tokens)            # after the prompt's `<|start|>assistant`
"""

from typing import Iterable, Optional, Sequence, Union

from .chat import Author, Conversation, DeveloperContent, Message, ReasoningEffort, Role, SystemContent
from .errors import HarmonyError
from .tools import ToolDescription, ToolNamespaceConfig

CHANNELS = ("analysis", "commentary", "final")  # what gpt-oss was trained with
_EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}
_DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."


def _channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise HarmonyError(f"channel {channel!r} is not one gpt-oss knows: {', '.join(CHANNELS)}")
    return channel


def system(
    *,
    identity: Optional[str] = _DEFAULT_IDENTITY,
    reasoning: Optional[str] = "medium",
    date: Optional[str] = None,
    knowledge_cutoff: Optional[str] = "2024-06",
    channels: Optional[Sequence[str]] = CHANNELS,
    browser: bool = False,
    python: bool = False,
) -> Message:
    """The platform's message: identity, dates, reasoning level (low/medium/high), channels, built-in tools."""
    if reasoning is not None and str(reasoning).lower() not in _EFFORTS:
        raise HarmonyError(f"reasoning must be low, medium or high (or None), not {reasoning!r}")
    content = SystemContent(
        model_identity=identity,
        reasoning_effort=None if reasoning is None else _EFFORTS[str(reasoning).lower()],
        conversation_start_date=date,
        knowledge_cutoff=knowledge_cutoff,
        channel_config=None,
    )
    if channels is not None:
        content.with_required_channels([_channel(c) for c in channels])
    if browser:
        content.with_browser_tool()
    if python:
        content.with_python_tool()
    return Message.from_role_and_content(Role.SYSTEM, content)


def function(name: str, description: str, parameters: Optional[dict] = None) -> ToolDescription:
    """A function tool; `parameters` is a JSON Schema object (None: the function takes no arguments)."""
    return ToolDescription(name=name, description=description, parameters=parameters)


def developer(instructions: Optional[str] = None, *, functions: Iterable[Union[ToolDescription, dict]] = ()) -> Message:
    """The application's message ("system prompt" elsewhere): instructions and the `functions` namespace."""
    content = DeveloperContent(instructions=instructions)
    tools = [t if isinstance(t, ToolDescription) else ToolDescription.from_dict(t) for t in functions]
    if tools:
        content.with_tools(ToolNamespaceConfig(name="functions", description=None, tools=tools))
    return Message.from_role_and_content(Role.DEVELOPER, content)


def user(text: str) -> Message:
    return Message.from_role_and_content(Role.USER, text)


def assistant(text: str, *, channel: str = "final", to: Optional[str] = None, json: bool = False) -> Message:
    """A model message. `to="functions.get_weather"` makes it a tool call (ends in <|call|>); json=True marks
    its arguments as constrained JSON (`<|constrain|>json`), as gpt-oss writes them."""
    message = Message.from_role_and_content(Role.ASSISTANT, text).with_channel(_channel(channel))
    if to is not None:
        message = message.with_recipient(to)
    if json:
        if to is None:
            raise HarmonyError("json=True marks tool-call arguments: give the tool in `to=`")
        message = message.with_content_type("<|constrain|>json")
    return message


def tool_result(name: str, text: str, *, channel: str = "commentary") -> Message:
    """A tool's answer to the assistant; `name` is the tool called, e.g. "functions.get_weather"."""
    if not isinstance(name, str) or not name:
        raise HarmonyError("a tool result needs the tool's name, e.g. 'functions.get_weather'")
    return (
        Message.from_author_and_content(Author.new(Role.TOOL, name), text)
        .with_channel(_channel(channel))
        .with_recipient("assistant")
    )


def _encoding():
    from .encoding import load_harmony_encoding

    return load_harmony_encoding()


def prompt(messages: Sequence[Message], *, next_role: str = "assistant", drop_analysis: bool = True) -> list[int]:
    """Tokens for the model to continue: the conversation, then `<|start|>{next_role}`."""
    from .encoding import RenderConversationConfig

    if next_role not in {r.value for r in Role}:
        raise HarmonyError(f"next_role must be one of system, developer, user, assistant, tool; not {next_role!r}")
    return _encoding().render_conversation_for_completion(
        Conversation.from_messages(messages),
        Role(next_role),
        RenderConversationConfig(auto_drop_analysis=drop_analysis),
    )


def parse(tokens: Sequence[int], *, role: Optional[str] = "assistant", strict: bool = True) -> list[Message]:
    """Messages in a completion; by default the tokens follow the prompt's `<|start|>assistant`."""
    return _encoding().parse_messages_from_completion_tokens(
        tokens, None if role is None else Role(role), strict=strict
    )


def stream(tokens: Sequence[int], *, role: Optional[str] = "assistant", strict: bool = True) -> list[dict]:
    """A completion fed to StreamableParser one token at a time: after each token, who is speaking (`role`), on
    which `channel`, to whom (`recipient`), its `content_type`, and the text that token added (`delta`; None when
    it added none, as for the first bytes of a character split across tokens)."""
    from .parse import StreamableParser

    parser = StreamableParser(_encoding(), None if role is None else Role(role), strict=strict)
    out = []
    for token in tokens:
        parser.process(token)
        who = parser.current_role
        out.append({"role": None if who is None else who.value, "channel": parser.current_channel,
                    "recipient": parser.current_recipient, "content_type": parser.current_content_type,
                    "delta": parser.last_content_delta})
    return out
