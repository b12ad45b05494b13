"""POST /v1/chat/completions: messages rendered with harmony (chat.py), the reply parsed back (reply.py).

The reply's analysis is `message.reasoning_content` (streamed as `delta.reasoning_content`), never content;
tool calls (commentary to `functions.NAME`) are `message.tool_calls` with the model's JSON arguments as written,
finish_reason `tool_calls`; the rest is `content`. A reply that is not harmony (reply.py) comes back as raw text
in `content`, with `harmony_error` on the choice saying where parsing failed. Usage counts reasoning tokens
(`completion_tokens_details.reasoning_tokens`: tokens generated while on the analysis channel).
Sampling stops at <|return|> (the answer is done) and <|call|> (a tool call is handed over).
Refused with a 400 naming the field: `n` > 1, penalties, `logit_bias`, `logprobs` / `top_logprobs`, `stop`, a structured
`response_format` (no constrained decoding here), and a vocabulary without harmony's tokens (`messages`).
"""
import contextlib

from fastapi import Request

from optimized.sampling import Sampling
from optimized.serve.app import (Run, check_model, check_prompt, check_unsupported, gone_response, new_id, now, sse,
                                 unless_disconnected)
from optimized.serve.chat import from_chat
from optimized.serve.errors import bad
from optimized.serve.reply import Reply
from optimized.serve.schemas import ChatRequest


def need_harmony(state, param: str):
    if state.encoding is None:
        raise bad(param, f"{param}: this checkpoint's vocabulary has {state.vocab} ids, too few for harmony's "
                         f"tokens (<|start|> = 200006 ...); chat needs o200k_harmony's. Use /v1/completions with "
                         f"token ids.", "harmony_unavailable")


def tool_list(tools, param: str) -> list[tuple]:
    out = [(t.name, t.description, t.parameters) for t in tools or []]
    names = [name for name, _, _ in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise bad(param, f"{param}: the function name {dup!r} is given twice")
    return out


async def parts(run: Run, reply: Reply):
    async with contextlib.aclosing(run.events()) as events:
        async for event in events:
            for part in reply.feed(event.id):
                yield part
    for part in reply.finish():
        yield part


def finish_reason(run: Run, reply: Reply) -> str:
    if run.done.reason == "length":
        return "length"
    return "tool_calls" if reply.finished_call else "stop"


def usage(prompt: int, run: Run, reply: Reply) -> dict:
    n = run.job.generated
    return {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n,
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens}}


def start(state, builder, effort, tools, tool_choice, max_tokens, max_param, sampling, prefix_param="tool_choice"):
    """Render, check and submit: (prompt ids, Run, Reply)."""
    prompt, prefix = builder.render(state.encoding, effort, tools, tool_choice, prefix_param)
    ids, max_tokens = check_prompt(state, prompt, max_tokens, "messages" if max_param != "max_output_tokens"
                                   else "input", max_param)
    run = Run(state, prompt=ids, max_tokens=max_tokens, sampling=sampling,
              stop_tokens=frozenset(state.encoding.stop_tokens_for_assistant_actions()))
    return ids, run, Reply(state.encoding, prefix)


def install(app, state):
    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check_model(state, body.model)
        check_unsupported(body, {"n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "logit_bias": None,
                                 "logprobs": False, "top_logprobs": None, "stop": None})
        if (body.response_format or {}).get("type", "text") != "text":
            raise bad("response_format", "response_format: only {'type': 'text'} is supported (no constrained "
                                         "decoding)", "unsupported")
        need_harmony(state, "messages")
        tools = tool_list([t.function for t in body.tools or []], "tools")
        max_param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        ids, run, reply = start(state, from_chat(body.messages), body.reasoning_effort, tools, body.tool_choice,
                                body.max_completion_tokens or body.max_tokens, max_param,
                                Sampling(body.temperature, body.top_p, body.seed))
        cid, created = new_id("chatcmpl"), now()
        head = {"id": cid, "object": "chat.completion.chunk" if body.stream else "chat.completion",
                "created": created, "model": body.model}

        if body.stream:
            async def chunks():
                def chunk(delta, finish=None):
                    return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]}
                yield chunk({"role": "assistant", "content": ""})
                async for part in parts(run, reply):
                    if part[0] == "call":
                        _, i, call_id, name = part
                        yield chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                                     "function": {"name": name, "arguments": ""}}]})
                    elif part[0] == "arguments":
                        yield chunk({"tool_calls": [{"index": part[1], "function": {"arguments": part[2]}}]})
                    else:
                        yield chunk({"reasoning_content" if part[0] == "reasoning" else "content": part[1]})
                last = chunk({}, finish_reason(run, reply))
                last["usage"] = usage(len(ids), run, reply)
                if reply.malformed:
                    last["choices"][0]["harmony_error"] = reply.malformed
                yield last
                if (body.stream_options or {}).get("include_usage"):
                    yield {**head, "choices": [], "usage": usage(len(ids), run, reply)}
            return sse(chunks())

        async def whole():
            async for _ in parts(run, reply):
                pass
            message = {"role": "assistant", "content": "".join(reply.content) or None,
                       "reasoning_content": "".join(reply.reasoning) or None}
            if reply.calls:
                message["tool_calls"] = [{"id": c["id"], "type": "function",
                                          "function": {"name": c["name"], "arguments": c["arguments"]}}
                                         for c in reply.calls]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(run, reply)}
            if reply.malformed:
                choice["harmony_error"] = reply.malformed
            if body.return_token_ids:
                choice["token_ids"] = run.tokens
            out = {**head, "choices": [choice], "usage": usage(len(ids), run, reply)}
            if body.return_token_ids:
                out["prompt_token_ids"] = ids
            return out

        result = await unless_disconnected(request, whole())
        return gone_response() if result is None else result
