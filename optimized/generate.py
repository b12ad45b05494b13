"""Generation: requests checked up front, prefill (chunked, ragged rows) and a decode loop with sampling,
harmony stop tokens and a streaming callback; CUDA graphs for the decode step on CUDA.

Every request is checked before any device work (ids in range, non-empty prompts, prompt + new tokens within
the cache, batch size), so a rejected request costs nothing and leaves the engine as it was. The cache is
reset at the start of every request, so a request that failed halfway (e.g. out of memory) leaves nothing
behind either.
CUDA graphs (torch.cuda.graphs): the decode step for a given cache is captured once and replayed; it is only
used on CUDA, with the Triton backend always, with the torch backend when its MoE op takes the gather path (no host
sync) for that batch size. CPU never touches it.
No host sync inside a prefill, and no GPU idle waiting for the host between decode steps: inputs go to the GPU pinned
and asynchronously (`_upload`), and `generate` launches each step before the previous step's tokens reach the host
(the chosen tokens feed it on the device; the host reads them, streams them and checks for stops while the GPU
computes the next step).

Legend: B rows, T tokens, V vocabulary.
"""
import time
from dataclasses import dataclass

import torch

from optimized import moe as moe_mod
from optimized.model import Model
from optimized.nonfinite import NonFiniteError, counts, locate
from optimized.sampling import Sampling, sample
from reference.tokens import check_tokens


PREFILL_CHUNK = 1024  # tokens a prefill step takes at least (the torch backend's attention holds its T x S scores)
PREFILL_CHUNK_MAX = 8192


def default_prefill_tokens(model: Model) -> int:
    """Tokens a prefill step takes, all rows together (Engine.chunk_for shares them among a batch's rows). A backend
    whose MoE runs tensor-core tiles of one expert's rows (`ops.moe_tile_rows`: 128 for the Triton kernels in bf16)
    decodes each expert's FP4 weights once a tile: a step of N tokens gives each of E experts about N*A/E rows, and
    with 1024-token steps gpt-oss-120b's 128 experts get 32 rows, a quarter of a tile (the decode and the MMA of all
    128 paid). Steps double from PREFILL_CHUNK up to PREFILL_CHUNK_MAX until an expert's expected rows fill two
    tiles: 20b 2048 tokens (256 rows an expert), 120b 8192 (256). Expected tile fill at random routing, (rows) /
    (128 x tiles): 0.67 -> 0.8 (20b), 0.25 -> 0.8 (120b). A backend without it (torch) keeps PREFILL_CHUNK."""
    rows = model.ops.moe_tile_rows(model.dtype) if getattr(model.ops, "moe_tile_rows", None) else 0
    c, tokens = model.config, PREFILL_CHUNK
    while rows and tokens < PREFILL_CHUNK_MAX and tokens * c.experts_per_token < 2 * rows * c.num_experts:
        tokens *= 2
    return tokens


class RequestError(ValueError):
    """A request the engine refuses before doing any work; the message names the problem."""


@dataclass
class Result:
    tokens: list[list[int]]  # generated ids per row (a stop token, when hit, is the last one)
    stopped: list[bool]  # row ended on a stop token
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_s: float = 0.0


class Engine:
    def __init__(self, model: Model, context: int = 4096, max_batch: int = 64, prefill_chunk: int | None = None,
                 cuda_graphs: bool | None = None):
        self.model, self.config = model, model.config
        if prefill_chunk is not None and (isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int)
                                          or prefill_chunk < 1):
            raise ValueError(f"prefill_chunk must be a positive integer (tokens of a row a prefill step takes) or "
                             f"None (the engine's choice), got {prefill_chunk!r}")
        self.context, self.max_batch, self.prefill_chunk = context, max_batch, prefill_chunk
        self.prefill_tokens = default_prefill_tokens(model)
        self.cuda_graphs = (model.device.type == "cuda") if cuda_graphs is None else cuda_graphs
        self._cache = None
        self._graphs = {}

    @classmethod
    def load(cls, path, device="cpu", dtype=torch.bfloat16, backend="torch", activations=None, **kw) -> "Engine":
        return cls(Model.load(path, device, dtype, backend, activations), **kw)

    # -- checks ---------------------------------------------------------------------------------------
    def check(self, rows, new_tokens: int = 0) -> list[list[int]]:
        if not isinstance(rows, (list, tuple)) or not rows:
            raise RequestError("a request needs at least one prompt")
        if len(rows) > self.max_batch:
            raise RequestError(f"{len(rows)} prompts exceed the engine's max_batch={self.max_batch}")
        if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 0:
            raise RequestError(f"max_new_tokens must be an integer >= 0, got {new_tokens!r}")
        V, out = self.config.vocab_size, []
        for r, row in enumerate(rows):
            try:
                ids = check_tokens(row, V, what=f"prompt {r}").tolist()  # the reference's rule, one home
            except ValueError as e:
                raise RequestError(str(e)) from None
            need = len(ids) + max(new_tokens - 1, 0)  # the last new token is never fed back
            if need > self.context:
                raise RequestError(f"prompt {r}: {len(ids)} tokens + {new_tokens} new need {need} cache positions, "
                                   f"more than the context of {self.context}")
            out.append(ids)
        return out

    def chunk_for(self, batch: int) -> int:
        """Tokens of each row a prefill step of `batch` rows takes: prefill_chunk if it was given, else the
        backend's prefill_tokens shared among the rows (the step's activations and MoE rows stay those of
        prefill_tokens tokens whatever the batch)."""
        return self.prefill_chunk if self.prefill_chunk is not None else max(1, self.prefill_tokens // batch)

    # -- the cache and the raw steps --------------------------------------------------------------------
    def release(self):
        """Drop the cache and its CUDA graphs (their memory back to the allocator); the next run makes new ones."""
        self._cache, self._graphs = None, {}

    def fresh_cache(self, batch: int):
        if self._cache is None or self._cache.batch != batch:
            self.release()  # the old cache (and its graphs) before allocating
            self._cache = self.model.new_cache(batch, self.context)
        self._cache.reset()
        return self._cache

    def run(self, cache, rows: list[list[int]], all_logits: bool = False):
        """Feed rows[b] to row b (ragged; [] = row idle) in chunks. Returns the last logits (B, V) float32,
        or with all_logits a list of (T_b, V)."""
        B, dev = cache.batch, self.model.device
        assert len(rows) == B
        if all(len(r) == 1 for r in rows) and not all_logits:
            return self._decode(cache, rows)
        lengths = [len(r) for r in rows]
        T = max(lengths)
        chunk = self.chunk_for(B)
        starts = range(0, T, chunk)
        # every chunk's inputs made here and moved in one go (_upload), so the chunks run back to back with no host
        # sync between them.
        # tok, pos (B, T): the rows left-aligned, padding at position -1; idx, ends (chunks, B): where each row's last
        # token falls in each chunk (clamped into the chunk) and whether it falls in that chunk
        tok = torch.zeros(B, T, dtype=torch.int64)
        pos = torch.full((B, T), -1, dtype=torch.int64)
        for b, r in enumerate(rows):
            tok[b, :len(r)] = torch.tensor(r, dtype=torch.int64)
            pos[b, :len(r)] = torch.arange(cache.lengths[b], cache.lengths[b] + len(r))
        idx = torch.tensor([[min(max(n - 1 - t0, 0), min(T, t0 + chunk) - t0 - 1) for n in lengths]
                            for t0 in starts], dtype=torch.int64)
        ends = torch.tensor([[t0 <= n - 1 < t0 + chunk for n in lengths] for t0 in starts])
        tok, pos, idx, ends = (self._upload(t) for t in (tok, pos, idx, ends))
        last = torch.zeros(B, self.config.vocab_size, device=dev)
        outs = [[] for _ in range(B)]
        for k, t0 in enumerate(starts):
            t1 = min(T, t0 + chunk)
            inputs = tok[:, t0:t1].contiguous(), pos[:, t0:t1].contiguous(), cache
            if all_logits:
                logits = self.model.forward(*inputs)  # (B, Tc, V)
                for b in range(B):
                    outs[b].append(logits[b, :max(0, min(lengths[b], t1) - t0)])
            else:
                logits = self.model.forward(*inputs, last=idx[k])  # (B, V)
                last = torch.where(ends[k][:, None], logits, last)
            for b in range(B):
                cache.lengths[b] += max(0, min(lengths[b], t1) - t0)
        return [torch.cat(o) for o in outs] if all_logits else last

    def _graphable(self, batch: int) -> bool:
        if self.model.ops.name == "triton" and self.model.weights.experts == "mxfp4":
            return True  # the Triton MoE reads the packed experts in place: no gather scratch, no host sync
        c, el = self.config, torch.empty((), dtype=self.model.dtype).element_size()
        return batch * c.experts_per_token * 3 * c.intermediate_size * c.hidden_size * el <= moe_mod.GATHER_BYTES

    def _upload(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor on the model's device; on CUDA through pinned memory and asynchronously, since a blocking copy
        waits for all the work queued before it: a host sync, the GPU idle while the host prepares what comes next."""
        dev = self.model.device
        return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)

    def _download(self, *ts: torch.Tensor):
        """Start copying device tensors to the host without waiting; returns a function that waits for those copies
        only (not for work queued after them) and gives their values as lists."""
        if ts[0].device.type != "cuda":
            return lambda: [t.tolist() for t in ts]
        hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in ts]
        for host, t in zip(hosts, ts):
            host.copy_(t, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return lambda: (done.synchronize(), [host.tolist() for host in hosts])[1]

    def _choose(self, logits: torch.Tensor, sampling: Sampling, gen):
        """The next tokens (B,) and whether each row's logits were finite (B,), both left on the device: the host
        reads the flags with the tokens (generate), so the check costs one reduction a step and no host sync."""
        finite = torch.isfinite(logits).all(dim=-1)
        if sampling.temperature > 0:  # multinomial refuses NaN (an error on CPU, a device assert on CUDA): a row
            logits = torch.where(finite[:, None], logits, 0.0)  # that is refused on the host samples anything
        return sample(logits, sampling, gen), finite

    def _non_finite(self, logits: torch.Tensor, tokens: list[int], row: int, decoded: bool) -> NonFiniteError:
        """The error for a row whose logits (V,) were not finite after `tokens`; the slow path (nonfinite.locate)."""
        return NonFiniteError(f"non-finite logits ({counts(logits)}) for prompt {row} after {len(tokens)} tokens: "
                              f"{locate(self, tokens, decode_last=decoded)}")

    def _decode(self, cache, rows) -> torch.Tensor:
        return self._decode_step(cache, self._upload(torch.tensor([r[0] for r in rows], dtype=torch.int64)))

    def _decode_step(self, cache, tok: torch.Tensor) -> torch.Tensor:
        """One token a row, tok (B,) int64 on the device, at the positions cache.lengths; returns logits (B, V)."""
        dev = self.model.device
        tok = tok[:, None]
        pos = self._upload(torch.tensor(cache.lengths, dtype=torch.int64)[:, None])
        if self.cuda_graphs and dev.type == "cuda" and self._graphable(cache.batch):
            logits = self._graph_step(cache, tok, pos)
        else:
            logits = self.model.forward(tok, pos, cache, decode=True)[:, 0]
        for b in range(cache.batch):
            cache.lengths[b] += 1
        return logits

    def _graph_step(self, cache, tok, pos) -> torch.Tensor:
        key = id(cache)
        if key not in self._graphs:
            st, sp = tok.clone(), pos.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            # warm-up: allocations and lazy tables; writing the same k/v twice is harmless
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.model.forward(st, sp, cache, decode=True, static=True)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.model.forward(st, sp, cache, decode=True, static=True)
            self._graphs[key] = (graph, st, sp, out)
        graph, st, sp, out = self._graphs[key]
        st.copy_(tok)
        sp.copy_(pos)
        graph.replay()
        return out[:, 0].clone()

    # -- user-facing -----------------------------------------------------------------------------------
    def logits(self, tokens) -> torch.Tensor:
        """Causal logits (T, V) float32 of one sequence from an empty cache."""
        (row,) = self.check([tokens])
        logits = self.run(self.fresh_cache(1), [row], all_logits=True)[0]
        if not bool(torch.isfinite(logits).all()):  # one reduction and one sync a call
            raise NonFiniteError(f"non-finite logits ({counts(logits)}) for {len(row)} tokens: "
                                 f"{locate(self, row, decode_last=False)}")
        return logits

    def generate(self, prompts, max_new_tokens: int, sampling: Sampling = Sampling(temperature=0.0),
                 stop_tokens=(), on_token=None) -> Result:
        """prompts: list of token-id lists (ragged). on_token(row, token) is called as each token is chosen."""
        rows = self.check(prompts, max_new_tokens)
        stops = {int(t) for t in stop_tokens}
        B, dev = len(rows), self.model.device
        gen = sampling.generator(dev) if sampling.temperature > 0 else None
        cache = self.fresh_cache(B)
        result = Result(tokens=[[] for _ in range(B)], stopped=[False] * B)
        if max_new_tokens == 0:
            return result
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        t = time.perf_counter()
        logits = self.run(cache, rows)
        sync()
        result.prefill_s, result.prefill_tokens = time.perf_counter() - t, sum(map(len, rows))
        t = time.perf_counter()
        frozen = {}
        chosen, finite = self._choose(logits, sampling, gen)  # (B,) each, on the device
        for step in range(max_new_tokens):
            arriving, scored = self._download(chosen, finite), logits  # this step's tokens and flags, on their way
            more = step < max_new_tokens - 1
            if more:
                # the next step is launched before this step's tokens reach the host, with them as its input, so the
                # GPU does not idle while the host reads them, calls on_token and checks for stops. A row that stops
                # at this step (its output ignored from then on) is fed its chosen token once more, then keeps
                # rewriting that one slot of its own (frozen), as rows that stopped earlier do
                for b, p in frozen.items():
                    cache.lengths[b] = p
                logits = self._decode_step(cache, chosen)
                chosen, finite = self._choose(logits, sampling, gen)
            nxt, ok = arriving()
            for b in range(B):  # before anything of this step is streamed: a row whose logits were not finite
                if not (ok[b] or result.stopped[b]):
                    raise self._non_finite(scored[b], rows[b] + result.tokens[b], b, decoded=step > 0)
            for b in range(B):
                if result.stopped[b]:
                    continue
                result.tokens[b].append(nxt[b])
                if on_token is not None:
                    on_token(b, nxt[b])
                if nxt[b] in stops:
                    result.stopped[b] = True
                    frozen[b] = cache.lengths[b] - more  # the slot the step already launched wrote
            if all(result.stopped) or not more:
                break
            result.decode_tokens += sum(not s for s in result.stopped)
        sync()
        result.decode_s = time.perf_counter() - t
        return result
