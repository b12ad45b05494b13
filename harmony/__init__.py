"""harmony: render and parse gpt-oss's chat format, a drop-in for OpenAI's `openai_harmony` package.

Switch by changing one import:  `from openai_harmony import ...`  ->  `from harmony import ...`.
Same names, same call shapes, token-identical output (tested against openai-harmony 0.0.8); no Rust,
no torch, no network. See harmony/README.md for the format, the role hierarchy and the known differences.

The Pythonic API is `harmony.build` (keyword builders, one-call prompt and parse).
Files: build.py (the Pythonic API), chat.py (the conversation model), tools.py (tool namespaces, built-in
browser/python), schema.py (JSON Schema -> TypeScript-like), render.py (tokens out), parse.py (tokens in, streaming),
encoding.py (HarmonyEncoding, load_harmony_encoding), errors.py (HarmonyError), tokenizer.py (o200k_harmony).
"""

from .chat import (
    ROLE_HIERARCHY,
    Author,
    ChannelConfig,
    Content,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    TextContent,
)
from .encoding import (
    HarmonyEncoding,
    HarmonyEncodingName,
    RenderConversationConfig,
    RenderOptions,
    load_harmony_encoding,
    raise_disallowed_special_token,
)
from .errors import HarmonyError
from . import build  # the Pythonic API: build.system(), build.user(), build.prompt(), ...
from .parse import StreamableParser, StreamState
from .tools import ToolDescription, ToolNamespaceConfig

__all__ = [
    "ROLE_HIERARCHY",
    "Author",
    "ChannelConfig",
    "Content",
    "Conversation",
    "DeveloperContent",
    "HarmonyEncoding",
    "HarmonyEncodingName",
    "HarmonyError",
    "Message",
    "ReasoningEffort",
    "RenderConversationConfig",
    "RenderOptions",
    "Role",
    "StreamableParser",
    "StreamState",
    "SystemContent",
    "TextContent",
    "ToolDescription",
    "ToolNamespaceConfig",
    "build",
    "load_harmony_encoding",
    "raise_disallowed_special_token",
]
