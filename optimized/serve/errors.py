"""Errors as OpenAI's API writes them, and the request-size guard.

Every refusal is JSON `{"error": {"message", "type", "param", "code"}}` with a 4xx status; `param` names the field
(`messages[1].role`, `prompt`, `max_tokens`) or is null when no field is to blame (bad JSON, a body too large).
Statuses: 400 invalid request, 404 unknown model or route, 413 body too large, 429 too many pending requests,
500 a failure inside the engine (non-finite logits, out of memory), 503 shutting down. Nothing else reaches a client:
an unexpected exception is a 500 with this shape too, never a dropped connection.
"""
import asyncio
import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad(param: str | None, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param, code)


TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "literal"}


def field_path(loc) -> str | None:
    """pydantic's loc ('body', 'messages', 1, 'role') -> 'messages[1].role'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TYPE_TAGS or "[" in part or part.startswith("function-"):
            continue  # the union member pydantic tried (`str`, `list[int]`, ...), not a field
        else:
            out += ("." if out else "") + str(part)
    return out or None


async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {first.get('msg')}", None, "invalid_json").response()
    param = field_path(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    return bad(param, f"{param or 'body'}: {msg}", "invalid_type" if "type" in first["type"] else "invalid_value"
               ).response()


async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return APIError(exc.status_code, str(exc.detail), None, code).response()


async def on_any(request: Request, exc: Exception) -> JSONResponse:
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}", None, "internal_error",
                    "server_error").response()


def install(app):
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_any)


DRAIN_LIMITS = 4, 10.0  # a refused body is read and dropped up to 4x the limit, for at most 10 s


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 before the app sees it, by its Content-Length
    or, without one (chunked), as soon as the bytes read pass the limit; the body is never held beyond it.
    Before the 413, the rest of the body is read and dropped within DRAIN_LIMITS (nginx's lingering close):
    a server that closes on unread bytes resets the connection, and a client still writing sees a reset, not the 413."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(receive, send, message.get("more_body", False))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, receive, send, more=True):
        loop, factor, seconds = asyncio.get_running_loop(), *DRAIN_LIMITS
        deadline, dropped = loop.time() + seconds, 0
        try:
            while more and dropped <= factor * self.limit:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
                if message["type"] == "http.disconnect":
                    return
                dropped += len(message.get("body", b""))
                more = message.get("more_body", False)
        except asyncio.TimeoutError:
            pass  # a client that stalls mid-body gets the 413 now and the connection closes
        body = json.dumps(APIError(413, f"the request body exceeds the server's limit of {self.limit} bytes "
                                        f"(--max-body-bytes)", None, "body_too_large").body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
