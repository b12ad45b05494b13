"""Tool descriptions and tool namespaces, and the two built-in namespaces gpt-oss was trained with.

What it is: the data side of tools (names, descriptions, JSON Schema parameters); rendering lives in
schema.py. The browser and python texts are copied verbatim from openai/harmony `ToolNamespaceConfig::browser`
/ `::python` (checked against openai-harmony 0.0.8's `get_tool_namespace_config` by the tests): the model
knows these exact words, so do not edit them.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import HarmonyError


def check_type(value, types, what: str):
    """A field of the wrong type is a HarmonyError here, where openai-harmony's pydantic models reject it
    at construction; rendering it anyway would produce a prompt the model never saw."""
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise HarmonyError(f"{what} must be {names}, not {type(value).__name__} ({value!r:.60})")
    return value


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


@dataclass
class ToolDescription:
    name: str
    description: str
    parameters: Optional[dict] = None  # a JSON Schema; None renders `() => any`

    def __post_init__(self):
        check_type(self.name, str, "ToolDescription.name")
        check_type(self.description, str, "ToolDescription.description")
        check_type(self.parameters, (dict, type(None)), "ToolDescription.parameters (a JSON Schema object or None)")

    @classmethod
    def new(cls, name: str, description: str, parameters: Optional[dict] = None) -> "ToolDescription":
        return cls(name=name, description=description, parameters=parameters)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "ToolDescription":
        return cls(name=raw["name"], description=raw["description"], parameters=raw.get("parameters"))


@dataclass
class ToolNamespaceConfig:
    name: str
    description: Optional[str] = None
    tools: list[ToolDescription] = field(default_factory=list)

    def __post_init__(self):
        check_type(self.name, str, "ToolNamespaceConfig.name")
        check_type(self.description, (str, type(None)), "ToolNamespaceConfig.description")
        self.tools = [t if isinstance(t, ToolDescription) else ToolDescription.from_dict(t) for t in self.tools]

    @staticmethod
    def browser() -> "ToolNamespaceConfig":
        return ToolNamespaceConfig(name="browser", description=_BROWSER_DESCRIPTION, tools=_browser_tools())

    @staticmethod
    def python() -> "ToolNamespaceConfig":
        return ToolNamespaceConfig(name="python", description=_PYTHON_DESCRIPTION, tools=[])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["tools"] = [t.to_dict() for t in self.tools]
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "ToolNamespaceConfig":
        return cls(name=raw["name"], description=raw.get("description"), tools=list(raw.get("tools", [])))


def coerce_namespaces(tools) -> Optional[dict[str, ToolNamespaceConfig]]:
    if tools is None:
        return None
    return {k: v if isinstance(v, ToolNamespaceConfig) else ToolNamespaceConfig.from_dict(v) for k, v in tools.items()}


_BROWSER_DESCRIPTION = (
    "Tool for browsing.\n"
    "The `cursor` appears in brackets before each browsing display: `[{cursor}]`.\n"
    "Cite information from the tool using the following format:\n"
    "`\u3010{cursor}\u2020L{line_start}(-L{line_end})?\u3011`, for example: "
    "`\u30106\u2020L9-L11\u3011` or `\u30108\u2020L3\u3011`.\n"
    "Do not quote more than 10 words directly from the tool output.\n"
    "sources=web (default: web)"
)

_PYTHON_DESCRIPTION = (
    "Use this tool to execute Python code in your chain of thought. The code will not be shown to the user."
    " This tool should be used for internal reasoning, but not for code that is intended to be visible to"
    " the user (e.g. when creating plots, tables, or files).\n\n"
    "When you send a message containing Python code to python, it will be executed in a stateful Jupyter"
    " notebook environment. python will respond with the output of the execution or time out after 120.0"
    " seconds. The drive at '/mnt/data' can be used to save and persist user files. Internet access for"
    " this session is UNKNOWN. Depends on the cluster."
)


def _browser_tools() -> list[ToolDescription]:
    num = {"type": "number", "default": -1}
    return [
        ToolDescription(
            "search",
            "Searches for information related to `query` and displays `topn` results.",
            {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "topn": {"type": "number", "default": 10},
                    "source": {"type": "string"},
                },
                "required": ["query"],
            },
        ),
        ToolDescription(
            "open",
            "Opens the link `id` from the page indicated by `cursor` starting at line number `loc`, showing"
            " `num_lines` lines.\n"
            "Valid link ids are displayed with the formatting: `\u3010{id}\u2020.*\u3011`.\n"
            "If `cursor` is not provided, the most recent page is implied.\n"
            "If `id` is a string, it is treated as a fully qualified URL associated with `source`.\n"
            "If `loc` is not provided, the viewport will be positioned at the beginning of the document or"
            " centered on the most relevant passage, if available.\n"
            "Use this function without `id` to scroll to a new location of an opened page.",
            {
                "type": "object",
                "properties": {
                    "id": {"type": ["number", "string"], "default": -1},
                    "cursor": dict(num),
                    "loc": dict(num),
                    "num_lines": dict(num),
                    "view_source": {"type": "boolean", "default": False},
                    "source": {"type": "string"},
                },
            },
        ),
        ToolDescription(
            "find",
            "Finds exact matches of `pattern` in the current page, or the page given by `cursor`.",
            {
                "type": "object",
                "properties": {"pattern": {"type": "string"}, "cursor": dict(num)},
                "required": ["pattern"],
            },
        ),
    ]
