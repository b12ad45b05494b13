"""Request bodies of the three endpoints, as pydantic models: types and ranges checked before any work.

Field names and defaults are OpenAI's (openai-python's types). Unknown fields are ignored, as vLLM and SGLang do;
fields this engine cannot honour are accepted only at their neutral value and refused otherwise (app.py names
them: `n` > 1, penalties, `logit_bias`, ...), so a request never silently gets something else than it asked for.
A validation error becomes a 400 naming the field (errors.py), e.g. `messages[1].role`.
`return_token_ids` (vLLM's name) adds the prompt's and the reply's token ids to a response.
"""
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function names


def check_parameters(v: Optional[dict]) -> Optional[dict]:
    """A function's `parameters`: a JSON Schema object, or None (no arguments). harmony renders any schema; what is
    refused here is what cannot be an object's schema at all."""
    if v is None:
        return v
    if v.get("type", "object") != "object":
        raise ValueError("a function's parameters must be a JSON Schema object ({\"type\": \"object\", ...})")
    props = v.get("properties", {})
    if not isinstance(props, dict) or not all(isinstance(p, dict) for p in props.values()):
        raise ValueError("`properties` must map each parameter's name to a JSON Schema object")
    if not isinstance(v.get("required", []), list):
        raise ValueError("`required` must be a list of parameter names")
    return v


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Sampled(_Body):
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=0, lt=2**64)
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    n: int = Field(1, ge=1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None
    user: Optional[str] = None
    return_token_ids: bool = False


class CompletionRequest(Sampled):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=0)
    stop: Optional[Union[str, list[str]]] = None
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    echo: bool = False
    return_tokens_as_token_ids: bool = False  # vLLM's: logprobs name tokens "token_id:N", not by their text
    best_of: Optional[int] = Field(None, ge=1)
    suffix: Optional[str] = None


class TextPart(_Body):
    type: Literal["text", "input_text", "output_text"] = "text"
    text: str


class FunctionCall(_Body):
    name: str = Field(pattern=NAME)
    arguments: str = ""


class ToolCall(_Body):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[TextPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None  # an earlier turn's analysis (vLLM's field name)
    reasoning: Optional[str] = None  # the same, as some clients name it

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionDef(_Body):
    name: str = Field(pattern=NAME)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v):
        return check_parameters(v)


class ChatTool(_Body):
    type: Literal["function"]
    function: FunctionDef


class ChatRequest(Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stop: Optional[Union[str, list[str]]] = None
    tools: Optional[list[ChatTool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    reasoning_effort: Optional[Literal["low", "medium", "high"]] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None
    response_format: Optional[dict[str, Any]] = None


class ResponsesTool(_Body):
    type: Literal["function"]
    name: str = Field(pattern=NAME)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v):
        return check_parameters(v)


class Reasoning(_Body):
    effort: Optional[Literal["low", "medium", "high"]] = None
    summary: Optional[str] = None


class ResponsesRequest(_Body):
    model: str
    input: Union[str, list[dict[str, Any]]]
    instructions: Optional[str] = None
    tools: Optional[list[ResponsesTool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    reasoning: Optional[Reasoning] = None
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=0, lt=2**64)  # not in OpenAI's Responses API; vLLM's extension
    stream: bool = False
    top_logprobs: Optional[int] = None
    store: Optional[bool] = None
    previous_response_id: Optional[str] = None
    background: Optional[bool] = None
    text: Optional[dict[str, Any]] = None
    metadata: Optional[dict[str, Any]] = None
    user: Optional[str] = None
    return_token_ids: bool = False
