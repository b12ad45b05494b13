"""The ASGI app (FastAPI): routes, the checks every endpoint shares, and the bridge from the scheduler's thread to a
request's coroutine.

What it is: `create_app(engine, options)` -> a FastAPI app serving GET /v1/models, GET /health, POST
/v1/completions (completions.py), /v1/chat/completions (chat_api.py), /v1/responses (responses.py). One
Scheduler (scheduler.py) owns the engine; each request is a Job whose events arrive on an asyncio queue. A request
ends its job however it ends: finished, a stop string, an error, or the client gone (a stream's generator is closed
by Starlette on disconnect; a non-streamed request races a disconnect watcher), so a row is never left decoding
for nobody. What it is not: the batching (scheduler.py) or the harmony mapping (chat.py, reply.py).
"""
import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from optimized.batching import Slots
from optimized.serve import errors
from optimized.serve.errors import APIError, bad
from optimized.serve.scheduler import Busy, Done, Failed, Job, Scheduler, Token
from reference.tokens import check_tokens


@dataclass(frozen=True)
class Options:
    model_name: str
    max_batch: int = 8  # rows decoded together
    max_pending: int = 64  # requests live or waiting; more get 429
    max_tokens: int = 4096  # the most new tokens one request may ask for
    max_body_bytes: int = 4 * 1024 * 1024


@dataclass
class State:
    engine: object
    options: Options
    scheduler: Scheduler
    encoding: object  # harmony's, or None when the vocabulary cannot hold harmony's tokens

    @property
    def vocab(self) -> int:
        return self.engine.config.vocab_size

    @property
    def context(self) -> int:
        return self.engine.context


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# -- checks every endpoint makes -------------------------------------------------------------------------
def check_model(state: State, model: str):
    if model != state.options.model_name:
        raise APIError(404, f"The model {model!r} does not exist; this server serves {state.options.model_name!r}",
                       "model", "model_not_found")


def check_unsupported(body, fields: dict):
    """Fields accepted only at their neutral value: {name: neutral}."""
    for name, neutral in fields.items():
        value = getattr(body, name, neutral)
        if value not in (neutral, None) and not (neutral is None and not value):
            raise bad(name, f"{name}={value!r} is not supported by this server (only {neutral!r})", "unsupported")


def check_prompt(state: State, ids, max_tokens: int | None, prompt_param: str, max_param: str) -> tuple[list, int]:
    """(ids, max new tokens) within the vocabulary, the context and --max-tokens; a 400 naming the field if not."""
    try:
        ids = check_tokens(ids, state.vocab, what=prompt_param).tolist()
    except ValueError as e:
        raise bad(prompt_param, str(e), "invalid_token_ids") from None
    room = state.context - len(ids) + 1  # the last new token is never fed back
    if room < 1:
        raise bad(prompt_param, f"{prompt_param}: {len(ids)} tokens exceed the context of {state.context} tokens",
                  "context_length_exceeded")
    limit = state.options.max_tokens
    if max_tokens is None:
        return ids, min(limit, room)
    if max_tokens > limit:
        raise bad(max_param, f"{max_param}={max_tokens} exceeds the server's limit of {limit} (--max-tokens)")
    if max_tokens > room:
        raise bad(max_param, f"{max_param}={max_tokens}: the {len(ids)} prompt tokens leave room for {room} new "
                             f"tokens in the context of {state.context}", "context_length_exceeded")
    return ids, max_tokens


# -- a job's events, in the request's coroutine -----------------------------------------------------------
class Run:
    """A submitted job; iterate `events()` for its Token/PromptLogprobs events, ending at Done (a Failed raises)."""

    def __init__(self, state: State, **job):
        self.scheduler = state.scheduler
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def emit(event):
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, event)
            except RuntimeError:  # the event loop is gone (shutdown): nobody to tell
                pass

        self.job = Job(emit=emit, **job)
        self.done: Done | None = None
        self.tokens: list[int] = []  # the generated ids so far
        try:
            self.scheduler.submit(self.job)
        except Busy as e:
            raise APIError(429, str(e), None, "too_many_requests", "rate_limit_error") from None

    async def events(self):
        try:
            while True:
                event = await self.queue.get()
                if isinstance(event, Failed):
                    raise APIError(500, f"the engine failed: {type(event.error).__name__}: {event.error}", None,
                                   "engine_error", "server_error")
                if isinstance(event, Done):
                    self.done = event
                    return
                if isinstance(event, Token):
                    self.tokens.append(event.id)
                yield event
        finally:
            self.scheduler.cancel(self.job)  # a no-op once it is done; frees its row otherwise


async def unless_disconnected(request: Request, coro):
    """Await coro, cancelling it (and so its job) if the client goes away first; None then."""
    async def gone():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(coro), asyncio.ensure_future(gone())
    done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        watch.cancel()
        return work.result()
    work.cancel()
    return None


def sse(chunks):
    """An async iterator of dicts (or (event, dict)) -> a text/event-stream response ending in `data: [DONE]`.
    An APIError raised while streaming is sent as an `error` event (the status line is gone by then)."""
    async def body():
        try:
            async for chunk in chunks:
                if isinstance(chunk, tuple):
                    yield f"event: {chunk[0]}\ndata: {json.dumps(chunk[1])}\n\n"
                else:
                    yield f"data: {json.dumps(chunk)}\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def gone_response() -> Response:
    return Response(status_code=499)


def create_app(engine, options: Options, slots: Slots | None = None) -> FastAPI:
    from optimized.__main__ import harmony_fits
    from harmony import load_harmony_encoding

    encoding = load_harmony_encoding()
    slots = slots or Slots(engine, options.max_batch)
    state = State(engine, options, Scheduler(slots, options.max_pending),
                  encoding if harmony_fits(engine.config.vocab_size, encoding) else None)
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.scheduler.close()

    app = FastAPI(title="gpt-oss-kit", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.serve = state
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=options.max_body_bytes)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": options.model_name, "object": "model", "created": 0,
                                            "owned_by": "gpt-oss-kit", "max_model_len": engine.context}]}

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "ok", **state.scheduler.stats()})

    from optimized.serve import chat_api, completions, responses
    completions.install(app, state)
    chat_api.install(app, state)
    responses.install(app, state)

    return app
