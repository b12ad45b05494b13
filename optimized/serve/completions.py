"""POST /v1/completions: a raw prompt (text or token ids) continued by the engine, no chat format.

Text prompts are encoded with o200k_harmony as plain text (special-token strings stay text; to send harmony's
special tokens, send token ids). Stop tokens: <|endoftext|>, <|return|> and <|call|> where the vocabulary has
them (none on a small test vocabulary); a stop token ends the reply, its id is in `token_ids`, its text is not in
`text`. `stop` strings (up to 4) cut the text before the first one found and end the reply. `logprobs` (0-20) gives
the legacy logprobs object (the model's log-probabilities, before temperature); with `echo`, the prompt's text and
its tokens' logprobs come first (the first prompt token's is null). One prompt per request, `n` = 1.
"""
import contextlib

from fastapi import Request

from optimized.sampling import Sampling
from optimized.serve.app import (Run, check_model, check_prompt, check_unsupported, gone_response, new_id, now, sse,
                                 unless_disconnected)
from optimized.serve.errors import bad
from optimized.serve.schemas import CompletionRequest
from optimized.serve.scheduler import PromptLogprobs
from optimized.serve.text import LegacyLogprobs, StopStrings, TextStream, decode

STOP_TEXTS = ("<|endoftext|>", "<|return|>", "<|call|>")


def stop_tokens(state) -> frozenset:
    if state.encoding is None:
        return frozenset()
    return frozenset(state.encoding.encode(t, allowed_special="all")[0] for t in STOP_TEXTS)


def prompt_ids(state, prompt):
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise bad("prompt", f"prompt: one prompt per request is supported, got {len(prompt)}", "unsupported")
        prompt = prompt[0]
    if isinstance(prompt, str):
        from harmony.tokenizer import get_tokenizer
        return get_tokenizer().encode(prompt)  # special-token text stays text
    return prompt


async def pieces(run: Run, stops: StopStrings, stop_ids: frozenset, logprobs: LegacyLogprobs | None):
    """(text, logprob entries so far) per token, then ('', ..., finish_reason) last."""
    text = TextStream()
    async with contextlib.aclosing(run.events()) as events:  # closed at once on a stop string: the row is freed
        async for event in events:
            if isinstance(event, PromptLogprobs):
                continue  # handled before (echo)
            if logprobs is not None:
                logprobs.add(event.id, event.logprob, event.top)
            piece = stops.push(text.feed(event.id)) if event.id not in stop_ids else ""
            yield piece, None
            if stops.hit:
                yield "", "stop"
                return
    yield stops.push(text.flush()) + stops.flush(), run.done.reason


def install(app, state):
    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(state, body.model)
        check_unsupported(body, {"n": 1, "best_of": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                                 "logit_bias": None, "suffix": None})
        ids, max_tokens = check_prompt(state, prompt_ids(state, body.prompt), body.max_tokens, "prompt", "max_tokens")
        stop_list = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop_list) > 4:
            raise bad("stop", f"stop: at most 4 sequences, got {len(stop_list)}")
        stop_ids = stop_tokens(state)
        run = Run(state, prompt=ids, max_tokens=max_tokens, sampling=Sampling(body.temperature, body.top_p, body.seed),
                  stop_tokens=stop_ids, logprobs=body.logprobs, echo=body.echo and body.logprobs is not None)
        cid, created = new_id("cmpl"), now()
        prefix = decode(ids) if body.echo else ""
        lp = LegacyLogprobs(as_ids=body.return_tokens_as_token_ids) if body.logprobs is not None else None
        head = {"id": cid, "object": "text_completion", "created": created, "model": body.model}

        async def echoed():
            """The prompt's logprobs arrive first when echoed."""
            if lp is not None and body.echo:
                event = await run.queue.get()
                if not isinstance(event, PromptLogprobs):
                    run.queue.put_nowait(event)  # a failure: let events() raise it
                    return
                for t, p, top in zip(ids, event.logprobs, event.top):
                    lp.add(t, p, top)

        def usage(n: int) -> dict:
            return {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}

        def choice(text, finish, extra=None):
            c = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return {**c, **(extra or {})}

        if body.stream:
            async def chunks():
                await echoed()
                sent, first = 0, True
                async for piece, finish in pieces(run, StopStrings(stop_list), stop_ids, lp):
                    c = choice((prefix if first else "") + piece, finish)
                    first = False
                    if lp is not None:
                        c["logprobs"], sent = lp.since(sent), len(lp)
                    chunk = {**head, "choices": [c]}
                    if finish is not None:
                        chunk["usage"] = usage(run.job.generated)
                    if c["text"] or finish is not None or c["logprobs"]:
                        yield chunk
                if (body.stream_options or {}).get("include_usage"):
                    yield {**head, "choices": [], "usage": usage(run.job.generated)}
            return sse(chunks())

        async def whole():
            await echoed()
            text, finish = prefix, None
            async for piece, finish in pieces(run, StopStrings(stop_list), stop_ids, lp):
                text += piece
            extra = {"token_ids": run.tokens} if body.return_token_ids else None
            out = {**head, "choices": [choice(text, finish, extra)], "usage": usage(run.job.generated)}
            if body.return_token_ids:
                out["prompt_token_ids"] = ids
            if lp is not None:
                out["choices"][0]["logprobs"] = lp.data
            return out

        result = await unless_disconnected(request, whole())
        return gone_response() if result is None else result
