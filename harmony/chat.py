"""The conversation model: roles, authors, contents, messages, conversations.

What it is: plain dataclasses with the names, fields, defaults, builders (`with_*`) and `to_dict`/`from_dict`
of openai-harmony's Python wrapper (openai_harmony/__init__.py, 0.0.8), so that code written for it runs
unchanged. What it is not: pydantic (no `model_dump`, no validation beyond what rendering needs) and not a
renderer (render.py). Source: openai/harmony src/chat.rs and docs/format.md.

The role hierarchy. Harmony resolves conflicting instructions by who wrote them:

    system > developer > user > assistant > tool

`system` is the platform (identity, dates, reasoning effort, channels, built-in tools); `developer` is the
application (instructions, function tools; what other APIs call the "system prompt"); `user` the person;
`assistant` the model itself; `tool` the output of a tool, trusted least. `Role.authority` exposes the order.
"""

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional, Sequence, Union

from .errors import HarmonyError
from .tools import ToolDescription, ToolNamespaceConfig, check_type, coerce_namespaces

_OPT_STR = (str, type(None))


class Role(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    DEVELOPER = "developer"
    TOOL = "tool"

    @classmethod
    def _missing_(cls, value):
        raise HarmonyError(f"Unknown role: {value!r} (roles are system, developer, user, assistant, tool)")

    @property
    def authority(self) -> int:
        """Rank in the instruction hierarchy: system 4 > developer 3 > user 2 > assistant 1 > tool 0."""
        return len(ROLE_HIERARCHY) - 1 - ROLE_HIERARCHY.index(self)

    def outranks(self, other: "Role") -> bool:
        """True when this role's instructions win over `other`'s (Role.DEVELOPER.outranks(Role.USER))."""
        return self.authority > Role(other).authority


# Highest authority first. Role itself compares as a str (it is one), so the order lives here.
ROLE_HIERARCHY = (Role.SYSTEM, Role.DEVELOPER, Role.USER, Role.ASSISTANT, Role.TOOL)


class ReasoningEffort(str, Enum):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


@dataclass
class Author:
    role: Role
    name: Optional[str] = None  # required for tool messages: the tool's name is the header, e.g. functions.f

    def __post_init__(self):
        self.role = Role(self.role)
        check_type(self.name, _OPT_STR, "Author.name")

    @classmethod
    def new(cls, role: Role, name: str) -> "Author":
        return cls(role=role, name=name)


class Content:
    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class TextContent(Content):
    text: str

    def __post_init__(self):
        check_type(self.text, str, "TextContent.text")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass
class ChannelConfig:
    valid_channels: list[str]
    channel_required: bool

    def __post_init__(self):
        check_type(self.valid_channels, (list, tuple), "ChannelConfig.valid_channels")
        for c in self.valid_channels:
            check_type(c, str, "each of ChannelConfig.valid_channels")
        self.valid_channels = list(self.valid_channels)
        check_type(self.channel_required, bool, "ChannelConfig.channel_required")

    @classmethod
    def require_channels(cls, channels: list[str]) -> "ChannelConfig":
        return cls(valid_channels=list(channels), channel_required=True)


def _default_channels() -> ChannelConfig:
    return ChannelConfig.require_channels(["analysis", "commentary", "final"])


@dataclass
class SystemContent(Content):
    """The system message body. The defaults are openai-harmony's Python defaults (its Rust side would
    default everything to absent); None leaves a line out."""

    model_identity: Optional[str] = "You are ChatGPT, a large language model trained by OpenAI."
    reasoning_effort: Optional[ReasoningEffort] = ReasoningEffort.MEDIUM
    conversation_start_date: Optional[str] = None
    knowledge_cutoff: Optional[str] = "2024-06"
    channel_config: Optional[ChannelConfig] = field(default_factory=_default_channels)
    tools: Optional[dict[str, ToolNamespaceConfig]] = None

    def __post_init__(self):
        for key in ("model_identity", "conversation_start_date", "knowledge_cutoff"):
            check_type(getattr(self, key), _OPT_STR, f"SystemContent.{key}")
        if self.reasoning_effort is not None:
            self.reasoning_effort = ReasoningEffort(self.reasoning_effort)
        if isinstance(self.channel_config, dict):
            self.channel_config = ChannelConfig(**self.channel_config)
        self.tools = coerce_namespaces(self.tools)

    @classmethod
    def new(cls) -> "SystemContent":
        return cls()

    def with_model_identity(self, model_identity: str) -> "SystemContent":
        self.model_identity = model_identity
        return self

    def with_reasoning_effort(self, reasoning_effort: ReasoningEffort) -> "SystemContent":
        self.reasoning_effort = ReasoningEffort(reasoning_effort)
        return self

    def with_conversation_start_date(self, conversation_start_date: str) -> "SystemContent":
        self.conversation_start_date = conversation_start_date
        return self

    def with_knowledge_cutoff(self, knowledge_cutoff: str) -> "SystemContent":
        self.knowledge_cutoff = knowledge_cutoff
        return self

    def with_channel_config(self, channel_config: ChannelConfig) -> "SystemContent":
        self.channel_config = channel_config
        return self

    def with_required_channels(self, channels: list[str]) -> "SystemContent":
        self.channel_config = ChannelConfig.require_channels(channels)
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> "SystemContent":
        self.tools = {} if self.tools is None else self.tools
        self.tools[ns_config.name] = ns_config
        return self

    def with_browser_tool(self) -> "SystemContent":
        return self.with_tools(ToolNamespaceConfig.browser())

    def with_python_tool(self) -> "SystemContent":
        return self.with_tools(ToolNamespaceConfig.python())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("model_identity", "reasoning_effort", "conversation_start_date", "knowledge_cutoff"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.value if isinstance(value, Enum) else value
        if self.channel_config is not None:
            out["channel_config"] = {
                "valid_channels": list(self.channel_config.valid_channels),
                "channel_required": self.channel_config.channel_required,
            }
        if self.tools is not None:
            out["tools"] = {k: v.to_dict() for k, v in self.tools.items()}
        out["type"] = "system_content"
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "SystemContent":
        return cls(**{k: v for k, v in raw.items() if k != "type"})


@dataclass
class DeveloperContent(Content):
    instructions: Optional[str] = None
    tools: Optional[dict[str, ToolNamespaceConfig]] = None

    def __post_init__(self):
        check_type(self.instructions, _OPT_STR, "DeveloperContent.instructions")
        self.tools = coerce_namespaces(self.tools)

    @classmethod
    def new(cls) -> "DeveloperContent":
        return cls()

    def with_instructions(self, instructions: str) -> "DeveloperContent":
        self.instructions = instructions
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> "DeveloperContent":
        self.tools = {} if self.tools is None else self.tools
        self.tools[ns_config.name] = ns_config
        return self

    def with_function_tools(self, tools: Sequence[ToolDescription]) -> "DeveloperContent":
        return self.with_tools(ToolNamespaceConfig(name="functions", description=None, tools=list(tools)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.instructions is not None:
            out["instructions"] = self.instructions
        if self.tools is not None:
            out["tools"] = {k: v.to_dict() for k, v in self.tools.items()}
        out["type"] = "developer_content"
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "DeveloperContent":
        return cls(**{k: v for k, v in raw.items() if k != "type"})


def content_from_dict(raw: Union[str, dict, Content]) -> Content:
    if isinstance(raw, Content):
        return raw
    if isinstance(raw, str):
        return TextContent(text=raw)
    if not isinstance(raw, dict):
        raise HarmonyError(
            f"message content must be str, a Content or a content dict, not {type(raw).__name__} ({raw!r:.60})"
        )
    kind = raw.get("type")
    if kind == "text":
        return TextContent(text=raw["text"])
    if kind == "system_content":
        return SystemContent.from_dict(raw)
    if kind == "developer_content":
        return DeveloperContent.from_dict(raw)
    raise HarmonyError(f"Unknown content variant: {raw!r} (harmony has text, system_content, developer_content)")


@dataclass
class Message:
    """One harmony message: `<|start|>{author}[ to={recipient}][<|channel|>{channel}][ {content_type}]
    <|message|>{content}<|end|>` (or `<|call|>` for an assistant message with a recipient)."""

    author: Author
    content: list[Content] = field(default_factory=list)
    channel: Optional[str] = None  # analysis | commentary | final for the assistant; any word elsewhere
    recipient: Optional[str] = None  # e.g. functions.get_weather for a tool call, assistant for a tool result
    content_type: Optional[str] = None  # e.g. "<|constrain|>json" for constrained tool-call arguments

    def __post_init__(self):
        if isinstance(self.author, dict):
            self.author = Author(**self.author)
        check_type(self.author, Author, "Message.author")
        self.content = [content_from_dict(c) for c in self.content]
        for key in ("channel", "recipient", "content_type"):
            check_type(getattr(self, key), _OPT_STR, f"Message.{key}")

    @classmethod
    def from_author_and_content(cls, author: Author, content: Union[str, Content]) -> "Message":
        return cls(author=author, content=[content_from_dict(content)])

    @classmethod
    def from_role_and_content(cls, role: Role, content: Union[str, Content]) -> "Message":
        return cls.from_author_and_content(Author(role=role), content)

    @classmethod
    def from_role_and_contents(cls, role: Role, contents: Sequence[Content]) -> "Message":
        return cls(author=Author(role=role), content=list(contents))

    def adding_content(self, content: Union[str, Content]) -> "Message":
        self.content.append(content_from_dict(content))
        return self

    def with_channel(self, channel: str) -> "Message":
        self.channel = channel
        return self

    def with_recipient(self, recipient: str) -> "Message":
        self.recipient = recipient
        return self

    def with_content_type(self, content_type: str) -> "Message":
        self.content_type = content_type
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.author.role.value, "name": self.author.name}
        out["content"] = [c.to_dict() for c in self.content]
        for key in ("channel", "recipient", "content_type"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Message":
        raw = data["content"]
        raw = [{"type": "text", "text": raw}] if isinstance(raw, str) else raw
        return cls(
            author=Author(role=Role(data["role"]), name=data.get("name")),
            content=[content_from_dict(c) for c in raw],
            channel=data.get("channel"),
            recipient=data.get("recipient"),
            content_type=data.get("content_type"),
        )


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> "Conversation":
        return cls(messages=list(messages))

    def __iter__(self):
        return iter(self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self.messages]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Conversation":
        return cls(messages=[Message.from_dict(m) for m in data["messages"]])

    @classmethod
    def from_json(cls, payload: str) -> "Conversation":
        return cls.from_dict(json.loads(payload))
