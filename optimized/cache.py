"""The KV cache: per layer, keys (after RoPE), values and the position each slot holds, for a batch of rows.

Full-attention layers (odd) keep `context` slots, slot = position. Sliding-window layers (even) keep only
min(sliding_window, context) slots as a ring buffer, slot = position % window: the key a new position
overwrites is exactly the one that just left the window. Each slot stores its position (-1 = empty), so the
attention op masks by position and needs no special case for rings, padding or ragged rows.
Not here: the attention math (attention.py) or any policy about which rows are live (generate.py).

Legend: B rows (sequences), S slots of a layer, K kv heads, D head_dim, T tokens written at once.
"""
import torch


def layer_slots(config, layer: int, context: int) -> int:
    window = config.window_of_layer(layer)
    return context if window is None else min(window, context)


def write_decode(k_cache, v_cache, pos_cache, k, v, pos):
    """One token per row into a layer's cache tensors (B, S, K, D) and (B, S): row b's k, v (B, 1, K, D) and its
    position pos (B, 1) >= 0 go to slot pos % S. No host sync (CUDA-graph safe)."""
    B, S, K, D = k_cache.shape
    assert tuple(k.shape) == tuple(v.shape) == (B, 1, K, D) and tuple(pos.shape) == (B, 1), (k.shape, pos.shape)
    flat = pos[:, 0] % S  # row b's slot, as an index into the (B*S) flattened slots
    if B > 1:
        flat = flat + torch.arange(0, B * S, S, device=k.device)
    k_cache.view(B * S, K, D).index_copy_(0, flat, k[:, 0])  # index_copy_: a third of index_put's cost
    v_cache.view(B * S, K, D).index_copy_(0, flat, v[:, 0])
    pos_cache.view(B * S).index_copy_(0, flat, pos[:, 0])


def write_tokens(k_cache, v_cache, pos_cache, k, v, pos):
    """Several tokens per row into a layer's cache tensors (B, S, K, D) and (B, S): token (b, t) with position
    pos[b, t] >= 0 to slot pos % S, those with pos < 0 nowhere. k, v (B, T, K, D), pos (B, T). A slot must be
    written at most once per row and call (rings: pass last_slots_only's positions). Host sync (nonzero)."""
    S = pos_cache.shape[1]
    b, t = torch.nonzero(pos >= 0, as_tuple=True)
    slots = pos[b, t] % S
    k_cache[b, slots] = k[b, t]
    v_cache[b, slots] = v[b, t]
    pos_cache[b, slots] = pos[b, t]


def last_slots_only(pos: torch.Tensor, S: int) -> torch.Tensor:
    """pos (B, T) -> the same with -1 for each token older than its row's last S positions: a ring of S slots
    keeps only those, and a later token of the call would take an earlier one's slot. (A full layer, S = context
    > every position: unchanged.) No host sync."""
    last = pos.max(dim=1, keepdim=True).values
    return torch.where(pos > last - S, pos, torch.full_like(pos, -1))


class Cache:
    def __init__(self, config, batch: int, context: int, device, dtype):
        assert batch >= 1 and context >= 1, (batch, context)
        K, D = config.num_key_value_heads, config.head_dim
        self.config, self.batch, self.context = config, batch, context
        self.k, self.v, self.pos = [], [], []
        for n in range(config.num_hidden_layers):
            S = layer_slots(config, n, context)
            self.k.append(torch.zeros(batch, S, K, D, device=device, dtype=dtype))
            self.v.append(torch.zeros(batch, S, K, D, device=device, dtype=dtype))
            self.pos.append(torch.full((batch, S), -1, device=device, dtype=torch.int64))
        self.lengths = [0] * batch  # per row: the position of its next token (host side)

    def tensors(self) -> list[torch.Tensor]:
        return self.k + self.v + self.pos

    def reset(self):
        for p in self.pos:
            p.fill_(-1)  # keys and values need no clearing: a slot with position -1 is invisible
        self.lengths = [0] * self.batch

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, all_valid: bool = False):
        """k, v (B, T, K, D), pos (B, T) with -1 for padding. Within a call a ring slot must be written at most
        once per row: the caller passes only the last S tokens of each row (attention.py does)."""
        B, T, K, D = k.shape
        assert tuple(v.shape) == (B, T, K, D) and tuple(pos.shape) == (B, T) and B == self.batch
        if all_valid:  # decode: one token per row, no host sync (CUDA-graph safe)
            write_decode(self.k[layer], self.v[layer], self.pos[layer], k, v, pos)
        else:
            write_tokens(self.k[layer], self.v[layer], self.pos[layer], k, v, pos)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    # -- rows that join and leave between steps (batching.Slots) ----------------------------------------
    def rows(self, start: int, stop: int) -> "Cache":
        """A Cache over rows [start, stop) that shares this one's tensors (a slice along B of each is a contiguous
        view): what a step writes through it lands here. Its `lengths` are its own list; the owner copies them."""
        assert 0 <= start < stop <= self.batch, (start, stop, self.batch)
        view = Cache.__new__(Cache)
        view.config, view.batch, view.context = self.config, stop - start, self.context
        view.k, view.v, view.pos = ([t[start:stop] for t in ts] for ts in (self.k, self.v, self.pos))
        view.lengths = self.lengths[start:stop]
        return view

    def clear_row(self, b: int):
        for p in self.pos:
            p[b].fill_(-1)
        self.lengths[b] = 0

    def move_row(self, src: int, dst: int):
        """Row src's keys, values, positions and length into row dst (src is then free)."""
        for t in self.tensors():
            t[dst].copy_(t[src])
        self.lengths[dst] = self.lengths[src]
