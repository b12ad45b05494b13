"""A bounded load test: concurrent clients share the batched decode and each gets exactly what it gets alone.

8 client threads send 24 requests (prompts of 1-40 tokens, 4-24 new tokens, greedy and seeded sampling, some
streamed) to a server with 4 rows, so requests join and leave the batch between steps and wait for rows; every
reply must equal its sequential twin (the same request sent alone, first) token for token, and afterwards the
server must be idle (no live row, nothing waiting) with its memory back to where the sequential pass left it.
Token for token in float32, where the engine's CPU kernels give a row the same bits whatever the batch; in bfloat16
a batch of several rows takes F.linear's bf16 matmul instead of the one-row kernel (another rounding, within the
engine's ragged-batch tolerance, optimized/README.md), so there every reply is checked complete, not identical.
The full-size version with latency and throughput is bench/serve_load.py (BENCHMARKS.md).
"""
import random
import threading

import pytest
import torch

from serve_helpers import client, idle, running  # noqa: I001 (skips without the serve extra)
from optimized.__main__ import TINY as BUNDLED
from optimized.generate import Engine

torch.set_num_threads(1)
M = "test-model"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def requests_() -> list[dict]:
    rng = random.Random(4)
    out = []
    for i in range(24):
        r = {"prompt": [rng.randrange(512) for _ in range(rng.randint(1, 40))], "max_tokens": rng.randint(4, 24),
             "temperature": 0.0 if i % 3 else 0.8, "seed": i, "stream": i % 4 == 1}
        out.append(r)
    return out


def send(c, r) -> list[int]:
    kw = dict(model=M, extra_body={"return_token_ids": True}, **{k: v for k, v in r.items() if k != "stream"})
    if not r["stream"]:
        reply = c.completions.create(**kw)
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == r["max_tokens"]
        return reply.choices[0].token_ids
    text = "".join(ch.choices[0].text for ch in c.completions.create(stream=True, **kw) if ch.choices)
    return text  # a stream carries text; compared as text with its twin's


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc for the RSS")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_concurrent_replies_equal_their_sequential_twins(dtype):
    engine = Engine.load(BUNDLED, "cpu", dtype, context=128)
    with running(engine, max_batch=4, max_pending=32) as (url, state):
        c = client(url)
        reqs = requests_()
        twins = [send(c, r) for r in reqs]
        baseline = rss_bytes()
        got, errors = [None] * len(reqs), []

        def worker(k):
            mine = client(url)
            try:
                for i in range(k, len(reqs), 8):
                    got[i] = send(mine, reqs[i])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and not any(t.is_alive() for t in threads)
        assert state.scheduler.steps > 0
        for i, (g, w) in enumerate(zip(got, twins)):
            if dtype == torch.float32:
                assert g == w, f"request {i} ({reqs[i]}) differs from its sequential twin"
            else:
                assert g is not None and (len(g) == len(w) or reqs[i]["stream"])
        assert idle(state.scheduler.slots)
        stats = state.scheduler.stats()
        assert stats["live"] == stats["waiting"] == stats["active_rows"] == 0
        assert state.scheduler.slots.lengths() == [] and all(n == 0 for n in state.scheduler.slots.cache.lengths)
        assert rss_bytes() - baseline < 32 * 2**20, "the server's memory grew under load"
