"""Malformed and hostile requests each get the documented error (optimized/serve/errors.py): a 4xx JSON body
`{"error": {"message", "type", "param", "code"}}` naming the field, never a crash or a hung connection; a client that
goes away frees its row; more requests than --max-pending get 429. Raw HTTP (http.client), not the openai client, so
the bytes on the wire are the test's own. Server: the bundled tiny checkpoint (512 ids), context 64, small limits; a
decode step slowed to 50 ms (SlowSlots) so a disconnect lands mid-reply.
"""
import http.client
import json
import socket
import time

import pytest
import torch

from serve_helpers import running  # noqa: I001 (skips without the serve extra)
from optimized.__main__ import TINY as BUNDLED
from optimized.batching import Slots
from optimized.generate import Engine
from optimized.serve import errors

torch.set_num_threads(1)
M = "test-model"
LIMIT = 16384


class SlowSlots(Slots):
    def step(self, tokens):
        time.sleep(0.05)
        return super().step(tokens)


@pytest.fixture(scope="module")
def server():
    engine = Engine.load(BUNDLED, "cpu", torch.float32, context=64)
    with running(engine, slots=SlowSlots(engine, 2), max_batch=2, max_pending=1, max_tokens=48,
                 max_body_bytes=LIMIT) as (url, state):
        yield url.removeprefix("http://"), state


def post(server, path, body, raw=False, headers=None):
    conn = http.client.HTTPConnection(server[0], timeout=30)
    data = body if raw else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


def error(server, path, body, status, param, code=None, **kw):
    got, out = post(server, path, body, **kw)
    assert got == status, out
    e = out["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["param"] == param and e["message"], out
    if code is not None:
        assert e["code"] == code, out
    return e


def C(**kw):
    return {"model": M, "prompt": [1, 2, 3], "max_tokens": 4, **kw}


def chat(**kw):
    return {"model": M, "messages": [{"role": "user", "content": "hi"}], **kw}


def test_bad_json_and_bodies(server):
    error(server, "/v1/completions", b'{"model": "test-model", "prompt": [1,', 400, None, "invalid_json", raw=True)
    error(server, "/v1/completions", b"\xff\xfe", 400, None, raw=True)
    error(server, "/v1/completions", b"[1, 2]", 400, None, raw=True)
    big = json.dumps(C(prompt="x" * (2 * LIMIT))).encode()
    error(server, "/v1/completions", big, 413, None, "body_too_large", raw=True)
    for _ in range(10):  # no Content-Length: counted as it arrives; the client still writing reads the 413, not a reset
        conn = http.client.HTTPConnection(server[0], timeout=30)
        conn.request("POST", "/v1/completions", iter([big[i:i + 4096] for i in range(0, len(big), 4096)]),
                     {"Content-Type": "application/json"}, encode_chunked=True)
        assert conn.getresponse().status == 413
        conn.close()


def test_a_client_stalling_in_a_refused_body_gets_the_413(server, monkeypatch):
    monkeypatch.setattr(errors, "DRAIN_LIMITS", (4, 0.5))
    with socket.create_connection(("127.0.0.1", int(server[0].rsplit(":", 1)[1])), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (LIMIT + 1) + b"x" * (LIMIT + 1) + b"\r\n")
        start = time.monotonic()
        reply = s.recv(65536)  # the body never ends: the drain gives up after 0.5 s and answers
        assert reply.startswith(b"HTTP/1.1 413") and time.monotonic() - start < 20, reply


@pytest.mark.parametrize("body, param, code", [
    (C(model="gpt-4"), "model", "model_not_found"),
    (C(prompt=list(range(1, 70))), "prompt", "context_length_exceeded"),
    (C(prompt=list(range(1, 30)), max_tokens=40), "max_tokens", "context_length_exceeded"),
    (C(max_tokens=49), "max_tokens", None),
    (C(max_tokens=-1), "max_tokens", None),
    (C(prompt=[1, 512]), "prompt", "invalid_token_ids"),
    (C(prompt=[-1]), "prompt", "invalid_token_ids"),
    (C(prompt=[1, 2**70]), "prompt", "invalid_token_ids"),
    (C(prompt=[]), "prompt", "invalid_token_ids"),
    (C(prompt="hello"), "prompt", "invalid_token_ids"),  # o200k's ids for it are past this vocabulary
    (C(prompt=[[1], [2]]), "prompt", "unsupported"),
    (C(n=2), "n", "unsupported"),
    (C(best_of=3), "best_of", "unsupported"),
    (C(logit_bias={"5": 10}), "logit_bias", "unsupported"),
    (C(presence_penalty=0.5), "presence_penalty", "unsupported"),
    (C(temperature=5), "temperature", None),
    (C(top_p=0), "top_p", None),
    (C(logprobs=21), "logprobs", None),
    (C(stop=["a", "b", "c", "d", "e"]), "stop", None),
    ({"prompt": [1]}, "model", None),
])
def test_completions_refusals_name_the_field(server, body, param, code):
    error(server, "/v1/completions", body, 404 if code == "model_not_found" else 400, param, code)


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("body, param", [
    (chat(messages=[]), "messages"),
    (chat(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
     "tools[0].function.parameters"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"properties": [1]}}}]),
     "tools[0].function.parameters"),
    (chat(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name"),
    (chat(tools=[{"type": "retrieval"}]), "tools[0].type"),
    (chat(reasoning_effort="extreme"), "reasoning_effort"),
    (chat(n=3), "n"),
    (chat(logprobs=True), "logprobs"),
    (chat(top_logprobs=2), "top_logprobs"),
    ({"model": M, "input": "hi", "top_logprobs": 2}, "top_logprobs"),
    (chat(response_format={"type": "json_schema", "json_schema": {}}), "response_format"),
    (chat(), "messages"),  # the tiny vocabulary cannot hold harmony's tokens
    ({"model": M, "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": M, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": M}, "input"),
])
def test_chat_and_responses_refusals_name_the_field(server, body, param):
    path = "/v1/responses" if "input" in body or "messages" not in body else "/v1/chat/completions"
    error(server, path, body, 400, param)


def test_unknown_routes_and_methods_are_json(server):
    conn = http.client.HTTPConnection(server[0], timeout=30)
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/completions", 405)):
        conn.request(method, path)
        r = conn.getresponse()
        assert r.status == status and json.loads(r.read())["error"]["message"]
    conn.close()


def health(server) -> dict:
    conn = http.client.HTTPConnection(server[0], timeout=30)
    conn.request("GET", "/health")
    out = json.loads(conn.getresponse().read())
    conn.close()
    return out


def wait_idle(server, seconds=10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        s = health(server)
        if s["live"] == s["waiting"] == s["active_rows"] == 0:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"still busy after {seconds} s: {health(server)}")


def test_disconnect_frees_the_row_and_pending_is_bounded(server):
    wait_idle(server)
    # a streamed reply of 48 slowed steps (~2.4 s); read one chunk, then a second request: over --max-pending=1
    conn = http.client.HTTPConnection(server[0], timeout=30)
    conn.request("POST", "/v1/completions", json.dumps(C(max_tokens=48, stream=True)).encode(),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.readline().startswith(b"data: ")
    error(server, "/v1/completions", C(), 429, None, "too_many_requests")
    steps = health(server)["steps"]
    conn.close()  # the client goes away mid-reply
    assert wait_idle(server) < 2.0 and health(server)["steps"] - steps < 40
    # the same without streaming: the server notices the closed socket while the reply is being made
    conn = http.client.HTTPConnection(server[0], timeout=30)
    conn.request("POST", "/v1/completions", json.dumps(C(max_tokens=48)).encode(), {"Content-Type": "application/json"})
    time.sleep(0.3)
    steps = health(server)["steps"]
    conn.sock.shutdown(2)
    conn.close()
    assert wait_idle(server) < 2.0 and health(server)["steps"] - steps < 40
    assert post(server, "/v1/completions", C())[0] == 200  # and the server serves on


def test_a_stop_string_frees_the_row_at_once(server):
    wait_idle(server)
    status, out = post(server, "/v1/completions", C(max_tokens=6, temperature=0))
    text = out["choices"][0]["text"]
    stop = text[2:4]
    steps = health(server)["steps"]
    status, out = post(server, "/v1/completions", C(max_tokens=48, temperature=0, stop=stop))
    assert status == 200 and out["choices"][0]["finish_reason"] == "stop" and out["choices"][0]["text"] == text[:2]
    assert wait_idle(server) < 1.0 and health(server)["steps"] - steps < 12  # not the 48 steps asked for
