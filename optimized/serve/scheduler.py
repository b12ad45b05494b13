"""The batching loop: one thread owns the engine; requests join and leave its batch between decode steps.

What it is: a queue of jobs (checked prompt ids, sampling, stop tokens, what to report) and a loop that, between
steps, drops cancelled rows, admits waiting jobs into free rows (their prompts prefilled together as one ragged
batch, `batching.Slots.admit`) and runs one decode step for every live row (`Slots.step`: the engine's batched
decode). Each chosen token goes to its job's `emit` callback at once (the server hands it to the request's asyncio
queue), so a slow client only fills its own queue and never holds the loop. What it is not: HTTP, text or harmony
(app.py, text.py, reply.py); those see only `Token`, `PromptLogprobs`, `Done` and `Failed` events.
Per-row choice: greedy rows by one argmax over the batch, sampled rows each with their own seeded generator
(so a seed reproduces a reply whatever else is in the batch); logprobs are the model's (log_softmax of the raw
logits, before temperature), computed only for rows that asked.

Legend: B live rows, V vocabulary.
"""
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from optimized.batching import Slots
from optimized.sampling import Sampling, sample


@dataclass
class Token:
    id: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None  # (id, logprob), most likely first


@dataclass
class PromptLogprobs:
    logprobs: list[float | None]  # per prompt token; None for the first (nothing predicts it)
    top: list[list[tuple[int, float]] | None]


@dataclass
class Done:
    reason: str  # "stop" (a stop token), "length" (max_tokens), "cancelled"


@dataclass
class Failed:
    error: Exception


class Busy(Exception):
    """More jobs than the server's --max-pending."""


@dataclass(eq=False)
class Job:
    prompt: list[int]
    max_tokens: int
    emit: object  # emit(event), called from the loop's thread
    sampling: Sampling = Sampling(temperature=0.0)
    stop_tokens: frozenset = frozenset()
    logprobs: int | None = None  # top alternatives per token (0: just the chosen token's); None: none
    echo: bool = False  # report the prompt's logprobs (needs its logits: a full-logits prefill)
    cancelled: bool = False
    generated: int = 0
    last: int = -1  # the token to feed at the next step
    generator: torch.Generator | None = field(default=None, repr=False)


def logprobs_of(logits: torch.Tensor, chosen: list[int], k: int):
    """logits (T, V) -> per row (logprob of chosen[t], top-k [(id, logprob)])."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    picked = lp.gather(1, torch.tensor(chosen, device=lp.device)[:, None])[:, 0].tolist()
    if k <= 0:
        return [(p, []) for p in picked]
    vals, ids = lp.topk(min(k, lp.shape[-1]), dim=-1)
    return [(p, list(zip(i, v))) for p, i, v in zip(picked, ids.tolist(), vals.tolist())]


class Scheduler:
    def __init__(self, slots: Slots, max_pending: int = 64):
        self.slots, self.max_pending = slots, max_pending
        self.live: list[Job] = []  # live[b]: the job in row b
        self.waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.steps = 0
        self._thread = threading.Thread(target=self._loop, name="serve-scheduler", daemon=True)
        self._thread.start()

    # -- called from the server's threads ---------------------------------------------------------------
    def submit(self, job: Job):
        with self._cond:
            if self._closed:
                raise Busy("the server is shutting down")
            if len(self.waiting) + len(self.live) >= self.max_pending:
                raise Busy(f"{self.max_pending} requests are already pending (--max-pending)")
            if job.sampling.temperature > 0:
                job.generator = job.sampling.generator(self.slots.engine.model.device)
            self.waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job):
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def stats(self) -> dict:
        with self._cond:
            return {"live": len(self.live), "waiting": len(self.waiting), "rows": self.slots.rows,
                    "active_rows": self.slots.active, "steps": self.steps}

    def close(self, timeout: float = 30.0):
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the loop's thread ------------------------------------------------------------------------------
    def _loop(self):
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self.waiting and not self.live:
                        self._cond.wait()
                    if self._closed:
                        break
                    self._drop_cancelled()
                    new = []
                    while self.waiting and len(new) < self.slots.free():
                        job = self.waiting.popleft()
                        if job.cancelled:
                            job.emit(Done("cancelled"))
                        else:
                            new.append(job)
                try:
                    if new:
                        self._admit(new)
                    if self.live:
                        self._step()
                except Exception as e:  # noqa: BLE001 - a failed step fails its rows, never the server
                    for job in self.live:
                        job.emit(Failed(e))
                    while self.live:
                        self._release(len(self.live) - 1)
        for job in self.live + list(self.waiting):
            job.emit(Failed(RuntimeError("the server shut down")))

    def _drop_cancelled(self):
        for b in reversed(range(len(self.live))):
            if self.live[b].cancelled:
                self.live[b].emit(Done("cancelled"))
                self._release(b)

    def _release(self, b: int):
        moved = self.slots.release(b)
        job = self.live.pop()  # the last row's job ...
        if moved is not None:
            self.live[b] = job  # ... now lives in row b

    def _admit(self, jobs: list[Job]):
        echo = any(j.echo for j in jobs)
        try:
            start, logits = self.slots.admit([j.prompt for j in jobs], all_logits=echo)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: these jobs fail, the live rows go on
            for job in jobs:
                job.emit(Failed(e))
            return
        if echo:
            for job, full in zip(jobs, logits):
                if job.echo:
                    pairs = logprobs_of(full[:-1], job.prompt[1:], job.logprobs or 0) if len(job.prompt) > 1 else []
                    job.emit(PromptLogprobs([None] + [p for p, _ in pairs], [None] + [t for _, t in pairs]))
            logits = torch.stack([full[-1] for full in logits])
        self.live.extend(jobs)
        self._choose(logits, range(start, start + len(jobs)))

    def _step(self):
        logits = self.slots.step([job.last for job in self.live])
        self.steps += 1
        self._choose(logits, range(len(self.live)))

    def _choose(self, logits: torch.Tensor, rows: range):
        """logits (n, V) of rows `rows`: choose, report and retire."""
        jobs = [self.live[b] for b in rows]
        chosen = torch.argmax(logits, dim=-1)
        finite = torch.isfinite(logits).all(dim=-1)
        for i, job in enumerate(jobs):
            if job.sampling.temperature > 0:
                row = torch.where(finite[i], logits[i], 0.0)[None]
                chosen[i] = sample(row, job.sampling, job.generator)[0]
        chosen_l, finite_l = chosen.tolist(), finite.tolist()
        done = []
        for i, (b, job) in enumerate(zip(rows, jobs)):
            if job.max_tokens == 0:  # only the prompt's logprobs were wanted (echo)
                job.emit(Done("length"))
                done.append(b)
                continue
            if not finite_l[i]:
                job.emit(Failed(FloatingPointError(f"non-finite logits after {job.generated} generated tokens")))
                done.append(b)
                continue
            tok = Token(chosen_l[i])
            if job.logprobs is not None:
                ((tok.logprob, tok.top),) = logprobs_of(logits[i:i + 1], [tok.id], job.logprobs)
            job.generated += 1
            job.last = tok.id
            job.emit(tok)
            if tok.id in job.stop_tokens:
                job.emit(Done("stop"))
                done.append(b)
            elif job.generated >= job.max_tokens:
                job.emit(Done("length"))
                done.append(b)
        for b in sorted(done, reverse=True):
            self._release(b)
