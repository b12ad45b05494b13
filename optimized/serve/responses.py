"""POST /v1/responses: the Responses API over the same harmony path as chat (chat.py, reply.py).

Input: a string, or items: messages (user, assistant, system/developer as instructions; text parts only),
`function_call`, `function_call_output` and `reasoning` items (an earlier turn, rendered back as harmony);
`instructions`; function `tools`; `tool_choice`; `reasoning.effort`; `max_output_tokens`. Output items in the
order the model wrote them: `reasoning` (content: reasoning_text), `message` (output_text), `function_call`
(call_id, name, JSON arguments as written). Streaming sends the API's typed events (response.created,
output_item.added, output_text.delta, reasoning_text.delta, function_call_arguments.delta, ... response.completed).
Not served (a 400 naming the field): `previous_response_id` and `background` (nothing is stored: `store` is
accepted and ignored), built-in tools (web search, file search, ...), structured `text.format`, non-text input.
"""
from fastapi import Request

from optimized.sampling import Sampling
from optimized.serve.app import check_model, gone_response, new_id, now, sse, unless_disconnected
from optimized.serve.chat import from_responses
from optimized.serve.chat_api import need_harmony, parts, start, tool_list
from optimized.serve.errors import bad
from optimized.serve.schemas import ResponsesRequest


class Items:
    """Reply parts -> output items, and the stream events that build them."""

    def __init__(self):
        self.items: list[dict] = []
        self.seq = 0

    def event(self, kind: str, **fields) -> tuple:
        self.seq += 1
        return kind, {"type": kind, "sequence_number": self.seq, **fields}

    def _open(self, kind: str, call=None) -> list[tuple]:
        out = self.close()
        if kind == "reasoning":
            item = {"type": "reasoning", "id": new_id("rs"), "summary": [], "status": "in_progress",
                    "content": [{"type": "reasoning_text", "text": ""}]}
        elif kind == "message":
            item = {"type": "message", "id": new_id("msg"), "role": "assistant", "status": "in_progress",
                    "content": [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]}
        else:
            item = {"type": "function_call", "id": new_id("fc"), "call_id": call[0], "name": call[1],
                    "arguments": "", "status": "in_progress"}
        self.items.append(item)
        i = len(self.items) - 1
        out.append(self.event("response.output_item.added", output_index=i, item=dict(item, content=[])
                              if kind != "function_call" else dict(item)))
        if kind == "message":
            out.append(self.event("response.content_part.added", item_id=item["id"], output_index=i,
                                  content_index=0, part=dict(item["content"][0])))
        return out

    def add(self, part: tuple) -> list[tuple]:
        kind = {"reasoning": "reasoning", "content": "message"}.get(part[0], "function_call")
        last = self.items[-1] if self.items else None
        out = []
        if part[0] == "call" or last is None or last["type"] != kind or last["status"] != "in_progress":
            if part[0] == "arguments":  # arguments of a call already closed cannot happen; be safe
                return out
            out += self._open(kind, part[2:] if part[0] == "call" else None)
            if part[0] == "call":
                return out
        item, i = self.items[-1], len(self.items) - 1
        if kind == "function_call":
            item["arguments"] += part[2]
            out.append(self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=i,
                                  delta=part[2]))
        else:
            item["content"][0]["text"] += part[1]
            name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
            extra = {"logprobs": []} if kind == "message" else {}
            out.append(self.event(name, item_id=item["id"], output_index=i, content_index=0, delta=part[1], **extra))
        return out

    def close(self) -> list[tuple]:
        if not self.items or self.items[-1]["status"] != "in_progress":
            return []
        item, i = self.items[-1], len(self.items) - 1
        item["status"] = "completed"
        out = []
        if item["type"] == "function_call":
            out.append(self.event("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                                  name=item["name"], arguments=item["arguments"]))
        else:
            text = item["content"][0]["text"]
            name = "response.reasoning_text.done" if item["type"] == "reasoning" else "response.output_text.done"
            extra = {"logprobs": []} if item["type"] == "message" else {}
            out.append(self.event(name, item_id=item["id"], output_index=i, content_index=0, text=text, **extra))
            if item["type"] == "message":
                out.append(self.event("response.content_part.done", item_id=item["id"], output_index=i,
                                      content_index=0, part=item["content"][0]))
        out.append(self.event("response.output_item.done", output_index=i, item=item))
        return out


def install(app, state):
    @app.post("/v1/responses")
    async def responses(body: ResponsesRequest, request: Request):
        check_model(state, body.model)
        for name in ("previous_response_id", "background"):
            if getattr(body, name):
                raise bad(name, f"{name}: not supported (this server stores no responses)", "unsupported")
        if body.top_logprobs:
            raise bad("top_logprobs", "top_logprobs: not supported on /v1/responses (use /v1/completions)",
                      "unsupported")
        fmt = ((body.text or {}).get("format") or {}).get("type", "text")
        if fmt != "text":
            raise bad("text.format", "text.format: only 'text' is supported (no constrained decoding)", "unsupported")
        need_harmony(state, "input")
        tools = tool_list(body.tools, "tools")
        effort = body.reasoning.effort if body.reasoning else None
        ids, run, reply = start(state, from_responses(body.instructions, body.input), effort, tools, body.tool_choice,
                                body.max_output_tokens, "max_output_tokens",
                                Sampling(body.temperature, body.top_p, body.seed))
        items = Items()
        base = {"id": new_id("resp"), "object": "response", "created_at": now(), "model": body.model,
                "instructions": body.instructions, "tools": [dict(t.model_dump(), strict=bool(t.strict))
                                                             for t in body.tools or []],
                "tool_choice": body.tool_choice or "auto", "parallel_tool_calls": bool(body.parallel_tool_calls),
                "temperature": body.temperature, "top_p": body.top_p, "max_output_tokens": body.max_output_tokens,
                "reasoning": {"effort": effort or "medium", "summary": None}, "text": {"format": {"type": "text"}},
                "metadata": body.metadata or {}, "previous_response_id": None, "store": False, "error": None}

        def response(status: str) -> dict:
            out = {**base, "status": status, "output": items.items, "incomplete_details": None, "usage": None}
            if status != "in_progress":
                n = run.job.generated
                out["usage"] = {"input_tokens": len(ids), "input_tokens_details": {"cached_tokens": 0},
                                "output_tokens": n,
                                "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                                "total_tokens": len(ids) + n}
                if run.done.reason == "length":
                    out["status"], out["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
                if reply.malformed:
                    out["harmony_error"] = reply.malformed
                if body.return_token_ids:
                    out["prompt_token_ids"], out["token_ids"] = ids, run.tokens
            return out

        if body.stream:
            async def events():
                yield items.event("response.created", response=response("in_progress"))
                yield items.event("response.in_progress", response=response("in_progress"))
                async for part in parts(run, reply):
                    for e in items.add(part):
                        yield e
                for e in items.close():
                    yield e
                final = response("completed")
                yield items.event("response.completed" if final["status"] == "completed" else "response.incomplete",
                                  response=final)
            return sse(events())

        async def whole():
            async for part in parts(run, reply):
                items.add(part)
            items.close()
            return response("completed")

        result = await unless_disconnected(request, whole())
        return gone_response() if result is None else result
