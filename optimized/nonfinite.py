"""Non-finite logits: found cheaply on every call, explained on the slow path after a failure.

The check (generate.py): Engine.logits tests its logits once; generate computes a per-row "finite" flag beside each
step's sampled tokens, on the device, and the host reads it with those tokens in the same copy (no extra host sync,
nothing inside a CUDA graph). A row that fails raises NonFiniteError before anything made of it is streamed.
The explanation (here, only after a failure): `locate` re-runs the row's tokens from an empty cache with every stage
captured (Model.forward's capture), in the engine's prefill chunks and, for a decode step, the last token on the
decode path, and names the first stage in forward order that holds NaN or inf, with the stage's largest weights.

Why the engine can fail where the reference does not: float32 and bfloat16 both end near 3.4e38, while E8M0 scales
reach 2^127 (an FP4 6.0 times scale 0xFE is 1.0e39) and the reference computes in float64. Values that no longer
fit the compute dtype become inf, then NaN (inf - inf, 0 * inf); RMSNorm would bring them back to finite logits,
but only from values that exist. The engine does not rescale to follow the reference there: that is a different
computation for every checkpoint, to rescue one that no trained model is; the error names the culprit instead.

Legend: T tokens.
"""
import torch

from reference.checkpoint import hf_name, hf_qkv_names
from reference.mxfp4 import FP4_VALUES, SCALE_BIAS
from reference.model import stage_names


class NonFiniteError(FloatingPointError):
    """The engine's logits hold NaN or inf; the message names the first stage that did and its largest weights."""


def counts(t: torch.Tensor) -> str:
    return describe(*tally(t))


def tally(t: torch.Tensor) -> tuple[int, int, int]:
    return int(torch.isnan(t).sum()), int(torch.isinf(t).sum()), t.numel()


def describe(nan: int, inf: int, total: int) -> str:
    """'640 of 640 NaN', '3 NaN and 5 inf of 640', or '' when every value is finite."""
    if nan and inf:
        return f"{nan} NaN and {inf} inf of {total}"
    return f"{nan or inf} of {total} {'NaN' if nan else 'inf'}" if nan or inf else ""


def locate(engine, tokens: list[int], decode_last: bool) -> str:
    """Re-run one row's tokens layer by layer; the first non-finite stage and a hint, as one clause."""
    model = engine.model
    T, chunk, dev = len(tokens), engine.chunk_for(1), model.device
    prefill = T - 1 if decode_last and T > 1 else T
    steps = [(t0, min(t0 + chunk, prefill), False) for t0 in range(0, prefill, chunk)]
    steps += [(prefill, T, True)] if prefill < T else []
    cache = engine.fresh_cache(1)
    names = stage_names(model.config)
    found = dict.fromkeys(names, (0, 0, 0))  # stage -> (NaN, inf, values) summed over the chunks
    for t0, t1, decode in steps:
        stages = {}
        tok = torch.tensor([tokens[t0:t1]], dtype=torch.int64, device=dev)
        model.forward(tok, torch.arange(t0, t1, device=dev)[None], cache, decode=decode, capture=stages)
        cache.lengths[0] += t1 - t0
        found = {name: tuple(a + b for a, b in zip(found[name], tally(stages[name]))) for name in names}
    for name in names:  # forward order: the first stage that broke in any chunk
        if found[name][0] or found[name][1]:
            return f"non-finite values first appear in {name} ({describe(*found[name])}); {hint(model, name)}"
    return "re-run layer by layer, every stage is finite (a fault that does not repeat, or a path the re-run misses)"


def hint(model, stage: str) -> str:
    """The largest weights of a stage, by their checkpoint name, against the compute dtype's range."""
    w = model.weights
    prefix = {"embedding": "embedding.", "norm": "norm.", "logits": "unembedding."}.get(stage, stage + ".")
    names = [n for n in w.tensors if n.startswith(prefix)] + (["norm.scale"] if stage == "logits" else [])
    largest = max(names, key=lambda n: magnitude(w.tensors[n], n))
    top, limit = magnitude(w.tensors[largest], largest), torch.finfo(model.dtype).max
    dtype = str(model.dtype).removeprefix("torch.")
    src = source_name(largest, w.layout)
    if top > limit:
        return (f"the checkpoint's {src} may overflow: its values reach {top:.3g}, beyond {dtype}'s largest "
                f"{limit:.3g} (the float64 reference can hold them)")
    return f"its largest weights, the checkpoint's {src}, reach {top:.3g} ({dtype} holds up to {limit:.3g})"


def magnitude(t: torch.Tensor, name: str) -> float:
    """The largest |value| a tensor stands for: an E8M0 scale times FP4's largest value, or its largest entry."""
    if name.endswith(".scales"):
        return max(abs(v) for v in FP4_VALUES) * 2.0 ** (int(t.max()) - SCALE_BIAS)
    if name.endswith(".blocks"):
        return 0.0  # FP4 codes: their size is their scale's
    return float(t.abs().max())


def source_name(name: str, layout: str) -> str:
    """A canonical tensor name as the checkpoint stores it (HF splits qkv into q, k and v)."""
    if layout != "hf":
        return name
    if ".attn.qkv." in name:
        return "/".join(hf_qkv_names(int(name.split(".")[1]), name.rsplit(".", 1)[1]))
    return hf_name(name)
