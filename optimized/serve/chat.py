"""API conversations -> harmony prompt tokens (this repository's `harmony`), for chat completions and Responses.

The mapping, as gpt-oss was trained and as OpenAI's gpt-oss `responses_api` and vLLM do it:
  - harmony's system message is the server's: identity, knowledge cutoff, `reasoning_effort` (low|medium|high,
    default medium) and the three channels; no conversation date (so a prompt does not change with the day);
  - the API's `system` and `developer` messages (and Responses' `instructions`) are the developer message's
    instructions, joined in order; `tools` (functions) are its `namespace functions { ... }`;
  - user -> user; assistant -> its earlier reasoning as an `analysis` message, its text as `final` (as a
    `commentary` preamble when the message also has tool calls), each tool call as a `commentary` message to
    `functions.NAME` with `<|constrain|>json` arguments;
  - a tool result -> a message from `functions.NAME` to the assistant, the name found from its call id.
Text is always text: special-token strings in any message are encoded as ordinary text by harmony's renderer.
tool_choice: "auto" (default) offers the tools; "none" leaves them out of the prompt; "required" and a named
function are forced honestly, by writing the start of the call's header after `<|start|>assistant` (the model
writes the rest); the parser (reply.py) reads those header tokens first.
"""
from harmony import HarmonyError
from harmony import build as h

from optimized.serve.errors import bad

FORCED = "<|channel|>commentary to=functions.{name}"


class PromptBuilder:
    def __init__(self):
        self.instructions: list[str] = []
        self.turns = []  # harmony Messages after the system and developer ones
        self.call_names: dict[str, str] = {}  # tool call id -> function name

    def user(self, text: str):
        self.turns.append(h.user(text))

    def assistant(self, text: str = "", reasoning: str | None = None, preamble: bool = False):
        """preamble: the text came with tool calls, so it was said on `commentary` before them, not as an answer."""
        if reasoning:
            self.turns.append(h.assistant(reasoning, channel="analysis"))
        if text:
            self.turns.append(h.assistant(text, channel="commentary" if preamble else "final"))

    def call(self, call_id: str, name: str, arguments: str):
        self.call_names[call_id] = name
        self.turns.append(h.assistant(arguments, channel="commentary", to=f"functions.{name}", json=True))

    def result(self, call_id: str | None, name: str | None, text: str, param: str):
        name = self.call_names.get(call_id or "", name)
        if not name:
            raise bad(param, f"{param}: a tool result must answer an earlier tool call: tool_call_id {call_id!r} "
                             f"matches none, and no `name` was given", "unknown_tool_call")
        self.turns.append(h.tool_result(f"functions.{name}", text))

    def render(self, encoding, effort: str | None, tools: list[tuple[str, str, dict | None]], tool_choice,
               choice_param: str) -> tuple[list[int], list[int]]:
        """(prompt tokens, forced header tokens): the prompt ends with `<|start|>assistant` + the forced tokens."""
        names = [name for name, _, _ in tools]
        forced = None
        if tool_choice == "none":
            tools = []
        elif tool_choice == "required":
            if not tools:
                raise bad(choice_param, f"{choice_param}: 'required' needs at least one tool")
            forced = FORCED.format(name="")
        elif isinstance(tool_choice, dict):
            name = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
            if tool_choice.get("type") != "function" or name not in names:
                raise bad(choice_param, f"{choice_param}: must be 'none', 'auto', 'required' or a function among the "
                                        f"tools ({', '.join(names) or 'none given'}), got {tool_choice!r}")
            forced = FORCED.format(name=name) + " <|constrain|>json<|message|>"
        elif tool_choice not in (None, "auto"):
            raise bad(choice_param, f"{choice_param}: unknown value {tool_choice!r}")
        messages = [h.system(reasoning=effort or "medium", date=None)]
        functions = [h.function(name, description or "", parameters) for name, description, parameters in tools]
        if self.instructions or functions:
            messages.append(h.developer("\n\n".join(self.instructions) or None, functions=functions))
        try:
            prompt = h.prompt(messages + self.turns)
        except HarmonyError as e:  # e.g. a NaN in a tool schema, a lone surrogate in text
            raise bad("tools" if "schema" in str(e).lower() or "json" in str(e).lower() else None,
                      f"the conversation cannot be rendered in harmony: {e}") from None
        prefix = encoding.encode(forced, allowed_special="all") if forced else []
        return prompt + prefix, prefix


def from_chat(messages) -> PromptBuilder:
    """Chat completions' `messages` (schemas.ChatMessage) -> a PromptBuilder."""
    b = PromptBuilder()
    for i, m in enumerate(messages):
        text = m.text()
        if m.role in ("system", "developer"):
            b.instructions.append(text)
        elif m.role == "user":
            b.user(text)
        elif m.role == "assistant":
            b.assistant(text, m.reasoning_content or m.reasoning, preamble=bool(m.tool_calls))
            for call in m.tool_calls or []:
                b.call(call.id, call.function.name, call.function.arguments)
        else:
            b.result(m.tool_call_id, m.name, text, f"messages[{i}].tool_call_id")
    return b


def _text(content, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(param, f"{param}: must be a string or a list of text parts")
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text", "reasoning_text", "summary_text") or not isinstance(
                part.get("text"), str):
            raise bad(f"{param}[{j}]", f"{param}[{j}]: only text parts are supported, got {kind!r}",
                      "unsupported_content")
        out.append(part["text"])
    return "".join(out)


def from_responses(instructions: str | None, input_) -> PromptBuilder:
    """The Responses API's `instructions` and `input` (a string or a list of items) -> a PromptBuilder."""
    b = PromptBuilder()
    if instructions:
        b.instructions.append(instructions)
    if isinstance(input_, str):
        b.user(input_)
        return b
    for i, item in enumerate(input_):
        kind, p = item.get("type", "message"), f"input[{i}]"
        if kind == "message":
            role = item.get("role")
            text = _text(item.get("content", ""), f"{p}.content")
            if role in ("system", "developer"):
                b.instructions.append(text)
            elif role == "user":
                b.user(text)
            elif role == "assistant":
                b.assistant(text)
            else:
                raise bad(f"{p}.role", f"{p}.role: must be user, assistant, system or developer, got {role!r}")
        elif kind == "function_call":
            name, args = item.get("name"), item.get("arguments", "")
            if not isinstance(name, str) or not name or not isinstance(args, str):
                raise bad(p, f"{p}: a function_call needs a `name` and string `arguments`")
            b.call(str(item.get("call_id", "")), name, args)
        elif kind == "function_call_output":
            output = item.get("output")
            b.result(str(item.get("call_id", "")), None, output if isinstance(output, str) else _text(output, p),
                     f"{p}.call_id")
        elif kind == "reasoning":
            b.assistant("", _text(item.get("content") or item.get("summary") or [], f"{p}.content"))
        else:
            raise bad(f"{p}.type", f"{p}.type: {kind!r} items are not supported (message, function_call, "
                                   f"function_call_output, reasoning are)", "unsupported_item")
    return b
