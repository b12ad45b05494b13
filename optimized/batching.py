"""Continuous batching: one KV cache of `rows` rows that sequences join and leave between decode steps.

What it is: the step-wise form of `Engine.generate` that a server needs (optimized/serve/scheduler.py). Sequences
are admitted (their prompts prefilled, several at once as ragged rows), decoded one token a row per `step`, and
released; every step runs only the live rows. The live rows are kept packed at the front of the cache, rows
[0, active), so a step is the engine's own batched decode (`Engine.run` / `_decode_step`) on a view of those rows
(`Cache.rows`: slices, no copy); releasing a row moves the last live row into its place (one copy of that row's
cache), so a finished sequence frees its slot at once. What it is not: a sampler or a stop-token policy (the caller
chooses tokens from the logits), nor a second model path (the same Model.forward, the same cache layout).

Legend: B live rows, V vocabulary.
"""
import torch

from optimized.generate import Engine, RequestError


class Slots:
    def __init__(self, engine: Engine, rows: int):
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows!r}")
        self.engine, self.rows = engine, rows
        self.cache = engine.model.new_cache(rows, engine.context)
        self.active = 0  # rows [0, active) hold live sequences
        self._views = {}  # (start, stop) -> Cache view; kept so a view's id is stable (CUDA graphs are keyed by it)

    def _view(self, start: int, stop: int):
        view = self._views.get((start, stop))
        if view is None:
            view = self._views[(start, stop)] = self.cache.rows(start, stop)
        view.lengths = self.cache.lengths[start:stop]
        return view

    def _settle(self, view, start: int):
        self.cache.lengths[start:start + view.batch] = view.lengths

    def free(self) -> int:
        return self.rows - self.active

    def admit(self, prompts: list[list[int]], all_logits: bool = False):
        """Prefill `prompts` (checked ids) into the next free rows, together as one ragged batch. Returns (first row,
        logits): the last logits (n, V) float32, or with all_logits a list of (T_b, V), one per prompt."""
        n = len(prompts)
        if n > self.free():
            raise RequestError(f"{n} sequences do not fit: {self.free()} of {self.rows} rows are free")
        start = self.active
        for b in range(start, start + n):
            self.cache.clear_row(b)
        view = self._view(start, start + n)
        try:
            logits = self.engine.run(view, prompts, all_logits=all_logits)
        except BaseException:
            for b in range(start, start + n):  # nothing of a failed prefill stays
                self.cache.clear_row(b)
            raise
        self._settle(view, start)
        self.active += n
        return start, logits

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Feed one token to each live row (tokens[b] to row b); returns their next logits (B, V) float32."""
        B = self.active
        assert B >= 1 and len(tokens) == B, (B, len(tokens))
        view = self._view(0, B)
        tok = self.engine._upload(torch.tensor(tokens, dtype=torch.int64))
        logits = self.engine._decode_step(view, tok)
        self._settle(view, 0)
        return logits

    def release(self, row: int) -> int | None:
        """Free `row`. The last live row moves into it (returned, so the caller can follow it), or None."""
        assert 0 <= row < self.active, (row, self.active)
        last = self.active - 1
        self.active = last
        if row != last:
            self.cache.move_row(last, row)
            self.cache.clear_row(last)
            return last
        self.cache.clear_row(row)
        return None

    def lengths(self) -> list[int]:
        return self.cache.lengths[:self.active]

    def nbytes(self) -> int:
        return self.cache.nbytes()
