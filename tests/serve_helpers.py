"""Shared pieces of tests/test_serve_*.py: a server on loopback in this process, a real-vocabulary checkpoint, and an
engine double that makes the model write a given token sequence.

`running(engine, ...)` starts uvicorn in a thread on a socket bound to 127.0.0.1 port 0 (the OS picks a free port),
waits until it answers, and always stops it (a context manager, used by module fixtures). `VOCAB` is a random
1-layer model with o200k_harmony's 201,088 ids (hidden 64), small enough to write in ~1 s: the text it writes is
meaningless, so the tests check token ids, shapes and harmony structure.
`ScriptedSlots` is the real batching.Slots (prefill and decode run, the cache fills and frees as always) whose
logits are replaced, for a row given a script, by a one-hot on the script's next token: the scheduler's sampling, the
stop tokens and the server's harmony parse then see exactly those tokens. Rows without a script get the model's
own logits.
"""
import contextlib
import dataclasses
import socket
import threading
import time

import pytest
import torch

from optimized.batching import Slots
from reference.writer import write_checkpoint

fastapi = pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai", reason="the openai client (test extra) is not installed")

from optimized.serve.app import Options, create_app  # noqa: E402
from helpers import TINY  # noqa: E402

VOCAB = dataclasses.replace(TINY, vocab_size=201088, num_hidden_layers=1)


def write_vocab_checkpoint(path):
    return write_checkpoint(path, VOCAB, seed=5)


@contextlib.contextmanager
def running(engine, slots=None, **options):
    """Yields (base_url, app state)."""
    app = create_app(engine, Options(**{"model_name": "test-model", **options}), slots)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app.state.serve
    finally:
        server.should_exit = True
        thread.join(15)
        app.state.serve.scheduler.close()
        sock.close()


def client(base_url, **kw):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=60, max_retries=0, **kw)


class ScriptedSlots(Slots):
    """Slots whose rows follow scripts: `scripts` is a list of token lists taken by admitted rows in order."""

    def __init__(self, engine, rows):
        super().__init__(engine, rows)
        self.scripts: list[list[int]] = []
        self.row_script: list[list[int] | None] = []  # per live row: what it still has to write

    def _force(self, logits: torch.Tensor, rows) -> torch.Tensor:
        logits = logits.clone()
        for i, b in enumerate(rows):
            script = self.row_script[b]
            if script:
                logits[i] = -1e4
                logits[i, script.pop(0)] = 1e4
        return logits

    def admit(self, prompts, all_logits=False):
        start, logits = super().admit(prompts, all_logits)
        for _ in prompts:
            self.row_script.append(list(self.scripts.pop(0)) if self.scripts else None)
        rows = range(start, start + len(prompts))
        if all_logits:
            last = self._force(torch.stack([t[-1] for t in logits]), rows)
            return start, [torch.cat([t[:-1], last[i:i + 1]]) for i, t in enumerate(logits)]
        return start, self._force(logits, rows)

    def step(self, tokens):
        return self._force(super().step(tokens), range(self.active))

    def release(self, row):
        moved = super().release(row)
        last = self.row_script.pop()
        if moved is not None:
            self.row_script[row] = last
        return moved


def idle(slots, seconds: float = 5.0) -> bool:
    """The scheduler releases a finished row just after its last event: wait for it."""
    deadline = time.monotonic() + seconds
    while slots.active and time.monotonic() < deadline:
        time.sleep(0.01)
    return slots.active == 0
