"""Choosing the next token from logits: greedy, temperature, top-p (nucleus), reproducible with a seed.

Source: Holtzman et al. 2019 (nucleus sampling), arXiv:1904.09751. temperature 0 means greedy (argmax, ties to
the lower id, as torch.argmax does); top_p keeps the smallest set of most likely tokens whose probability
reaches p (the token that crosses p is kept), then renormalizes. Randomness comes only from the
torch.Generator passed in, so a seed reproduces a run.

Legend: B rows, V vocabulary.
"""
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    def generator(self, device) -> torch.Generator:
        g = torch.Generator(device=device)
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed)
        return g


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs (B, V) -> probabilities restricted to the top-p nucleus, renormalized (B, V)."""
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the tokens strictly more likely
    keep_sorted = before < top_p  # the first token is always kept; the one crossing p is kept
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return kept / kept.sum(dim=-1, keepdim=True)


def sample(logits: torch.Tensor, params: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) float -> token ids (B,) int64."""
    B, V = logits.shape
    if params.temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1:
        probs = nucleus(probs, params.top_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
