"""Messages and conversations -> token ids, exactly as gpt-oss was trained to read them.

What it is: a behavioural port of openai/harmony's `Render` impls and `render_conversation*` (src/encoding.rs),
token-identical to openai-harmony 0.0.8 (tests/test_harmony_render.py). What it is not: a parser (parse.py)
or a tokenizer: text goes through `encode_ordinary`, so a message that spells `<|end|>` or `<|start|>` stays
plain text and can never forge a turn. Formatting tokens are the only special ids this module emits.

One message:  <|start|>{role}[:{name}][ to={recipient}][<|channel|>{channel}][ {content_type}]<|message|>
              {content}<|end|>      (<|call|> instead of <|end|> for an assistant message with a recipient)
A tool message's header is its author name alone (`functions.get_weather`), never the word `tool`.
Each piece (role, `:name`, ` to=...`, channel, content type, each content item) is BPE-encoded on its own,
so token boundaries never cross them.
"""

from .chat import Content, DeveloperContent, Message, ReasoningEffort, Role, SystemContent, TextContent
from .errors import HarmonyError
from .schema import json_number, tools_section

# o200k_harmony ids of the formatting tokens (openai/harmony src/registry.rs)
START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL = 200006, 200007, 200008, 200005, 200003, 200002, 200012
CONSTRAIN_TEXT = "<|constrain|>"

_EFFORT = {ReasoningEffort.LOW: "low", ReasoningEffort.MEDIUM: "medium", ReasoningEffort.HIGH: "high"}


def system_text(sys: SystemContent, has_function_tools: bool) -> str:
    sections = []
    top = []
    if sys.model_identity is not None:
        top.append(sys.model_identity)
    if sys.knowledge_cutoff is not None:
        top.append(f"Knowledge cutoff: {sys.knowledge_cutoff}")
    if sys.conversation_start_date is not None:
        top.append(f"Current date: {sys.conversation_start_date}")
    if top:
        sections.append("\n".join(top))
    if sys.reasoning_effort is not None:
        sections.append(f"Reasoning: {_EFFORT[sys.reasoning_effort]}")
    if sys.tools:
        sections.append(tools_section(sys.tools))
    cc = sys.channel_config
    if cc is not None and cc.valid_channels:
        header = f"# Valid channels: {', '.join(cc.valid_channels)}."
        if cc.channel_required:
            header += " Channel must be included for every message."
        # Said in the system message, but only when some developer message declares function tools.
        if has_function_tools:
            header += "\nCalls to these tools must go to the commentary channel: 'functions'."
        sections.append(header)
    return "\n\n".join(sections)


def developer_text(dev: DeveloperContent) -> str:
    sections = []
    if dev.instructions is not None:
        sections += ["# Instructions", dev.instructions]
    if dev.tools:
        sections.append(tools_section(dev.tools))
    return "\n\n".join(sections)


def render_message(encode_ordinary, message: Message, has_function_tools: bool = False) -> list[int]:
    out = [START]
    role = Role(message.author.role)
    if role is Role.TOOL:
        if message.author.name is None:
            raise HarmonyError("Tools should have a name! (a tool message's header is its author name)")
        out += encode_ordinary(message.author.name)
    else:
        out += encode_ordinary(role.value)
        if message.author.name is not None:
            out += encode_ordinary(f":{message.author.name}")
    # "all" is the implicit audience: it is not written.
    if message.recipient is not None and message.recipient != "all":
        out += encode_ordinary(f" to={message.recipient}")
    if message.channel is not None:
        out.append(CHANNEL)
        out += encode_ordinary(message.channel)
    if message.content_type is not None:
        ct = message.content_type
        if ct.startswith(CONSTRAIN_TEXT):  # the one header word that is a special token
            out += encode_ordinary(" ")
            out.append(CONSTRAIN)
            out += encode_ordinary(ct[len(CONSTRAIN_TEXT) :])
        else:
            out += encode_ordinary(f" {ct}")
    out.append(MESSAGE)
    for content in message.content:
        out += encode_ordinary(_content_text(content, role, has_function_tools))
    # Even recipient "all" makes an assistant message end in <|call|>.
    out.append(CALL if role is Role.ASSISTANT and message.recipient is not None else END)
    return out


def _content_text(content: Content, role: Role, has_function_tools: bool) -> str:
    if isinstance(content, TextContent):
        return content.text
    if isinstance(content, SystemContent):
        if role is not Role.SYSTEM:
            raise HarmonyError(f"SystemContent may only appear in system messages, found in {role.value}")
        return system_text(content, has_function_tools)
    if isinstance(content, DeveloperContent):
        if role is not Role.DEVELOPER:
            raise HarmonyError(f"DeveloperContent may only appear in developer messages, found in {role.value}")
        return developer_text(content)
    raise HarmonyError(f"harmony cannot render content of type {type(content).__name__}")


def has_function_tools(messages: list[Message]) -> bool:
    return any(
        isinstance(c, DeveloperContent) and c.tools and "functions" in c.tools and c.tools["functions"].tools
        for m in messages
        for c in m.content
    )


def kept_messages(messages: list[Message], auto_drop_analysis: bool) -> list[Message]:
    """Drop earlier chain of thought, as openai-harmony does: only when the last assistant message is on
    `final`, and then only `analysis` messages before the first `final` message (of any role). Reasoning
    after that first final answer is kept, a quirk of the reference we keep."""
    last_assistant = next((m for m in reversed(messages) if m.author.role == Role.ASSISTANT), None)
    if not (auto_drop_analysis and last_assistant is not None and last_assistant.channel == "final"):
        return list(messages)
    first_final = next((i for i, m in enumerate(messages) if m.channel == "final"), None)
    if first_final is None:
        return list(messages)
    return [m for i, m in enumerate(messages) if not (i < first_final and m.channel == "analysis")]


def render_conversation(encode_ordinary, messages: list[Message], auto_drop_analysis: bool) -> list[int]:
    check_representable(messages)
    fn_tools = has_function_tools(messages)
    out: list[int] = []
    for m in kept_messages(messages, auto_drop_analysis):
        out += render_message(encode_ordinary, m, fn_tools)
    return out


def render_for_training(encode_ordinary, messages: list[Message], auto_drop_analysis: bool) -> list[int]:
    """Like render_conversation, but a final assistant answer ends in <|return|>: what the model emits
    when it is done, while <|end|> is what a history shows."""
    out = render_conversation(encode_ordinary, messages, auto_drop_analysis)
    if messages and messages[-1].author.role == Role.ASSISTANT and messages[-1].channel == "final" and out:
        out[-1] = RETURN
    return out


# --- what openai-harmony's JSON hop rejects before rendering --------------------------------------


def _check_value(value, where: str):
    if isinstance(value, str):
        try:  # a lone surrogate cannot be UTF-8; a surrogate pair is one character after the JSON hop
            value.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            raise HarmonyError(f"{where} holds a lone surrogate, which is not valid unicode") from None
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, (int, float)):
        json_number(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_value(str(k), where)
            _check_value(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_value(v, where)


def check_representable(messages: list[Message]):
    """openai-harmony serialises each message to JSON for its Rust core; text that cannot survive that
    (lone surrogates, NaN, infinities, integers too large for f64) is an error there, so it is one here."""
    for i, m in enumerate(messages):
        _check_value(m.to_dict(), f"message {i}")
