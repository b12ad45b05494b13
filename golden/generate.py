"""Generating golden data from reference/: tiny checkpoints, model cases, op vectors, text vectors.

Every value here comes from reference/ (float64); the only other numbers are the error of golden/baseline.py
(a plain float32 / bfloat16 port) on the same data, stored beside the vectors because conformance/SPEC.md
sets each bound as a multiple of it. Everything is deterministic in the seeds below.

Legend: T tokens, V vocabulary, L layers, E experts, A experts per token, H q-heads, K kv-heads, D head_dim.
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from golden import baseline as B
from golden import derived
from golden.activations import CLASSES
from golden.format import DATA_DIR, OP_NAMES, save_npz, sha256, write_json, write_manifest
from golden.metric import err, logprob_err
from reference import mxfp4
from reference.attention import sdpa
from reference.config import Config
from reference.model import Model
from reference.moe import route, swiglu
from reference.norm import rms_norm
from reference.rope import cos_sin, inv_freq_and_concentration
from reference.checkpoint import expected_tensors
from reference.tensorfile import bf16_bits_to_f32
from reference.writer import random_tensor, write_checkpoint

BASELINE_DTYPES = ("float32", "bfloat16")

_TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=64, swiglu_limit=7.0, head_dim=16,
             initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0, rope_ntk_alpha=1.0,
             rope_ntk_beta=32.0)


def _cfg(**kw) -> Config:
    return Config(**{**_TINY, **kw})


# name -> (config, seed, prompt length, greedy steps). Together: GQA ratios 1/2/4, experts per token 1..4,
# windows shorter than the prompt (and one longer), YaRN on and off, odd and even layer counts.
CHECKPOINTS = {
    # the bundled checkpoint of `python -m reference`: 20b's shape in miniature (G=4, A=4, YaRN x32)
    "tiny": (_cfg(num_hidden_layers=4, num_experts=8, experts_per_token=4, num_attention_heads=8,
                  num_key_value_heads=2, sliding_window=8), 0, 24, 8),
    # G=1 (multi-head), top-1 routing, 3 layers (odd), YaRN off, prompt 4x the window
    "gqa1-top1-odd": (_cfg(num_hidden_layers=3, num_experts=4, experts_per_token=1, num_attention_heads=4,
                           num_key_value_heads=4, sliding_window=4, vocab_size=256, intermediate_size=32,
                           rope_scaling_factor=1.0), 1, 16, 6),
    # G=2, top-2 of 6, head_dim 8, YaRN x8 with a small original context, swiglu limit 3
    "gqa2-top2": (_cfg(num_hidden_layers=2, num_experts=6, experts_per_token=2, num_attention_heads=4,
                       num_key_value_heads=2, sliding_window=6, vocab_size=384, hidden_size=32, head_dim=8,
                       rope_theta=10000.0, rope_scaling_factor=8.0, initial_context_length=512,
                       swiglu_limit=3.0), 2, 20, 6),
    # G=2 with 6 heads, top-3 of 5, window longer than the prompt
    "gqa2-top3-wide": (_cfg(num_hidden_layers=2, num_experts=5, experts_per_token=3, num_attention_heads=6,
                            num_key_value_heads=3, sliding_window=32, vocab_size=256), 3, 12, 6),
    # G=4 with one kv head, top-2 of 4, a 48-token prompt through a 16-token window
    "mqa-long": (_cfg(num_hidden_layers=2, num_experts=4, experts_per_token=2, num_attention_heads=4,
                      num_key_value_heads=1, sliding_window=16, vocab_size=256), 4, 48, 6),
    # conditioned so that each known trap moves bf16 logits well past the bf16 bound (SPEC.md section 4, "bf16
    # margin"): a 512-token prompt (RoPE frequency errors grow with position), YaRN ramp bounds far from integers
    # (3.43, 6.51) and every YaRN value unlike the release's, a SwiGLU clamp that bites (limit 1; see CONDITIONING),
    # a window shorter than the prompt, routing decided by the router bias (no bf16 near-ties in 1024 decisions)
    "traps": (_cfg(num_hidden_layers=2, num_experts=4, experts_per_token=2, num_attention_heads=4,
                   num_key_value_heads=2, sliding_window=32, vocab_size=256, head_dim=32, rope_theta=50000.0,
                   rope_scaling_factor=16.0, initial_context_length=1024, rope_ntk_alpha=2.0, rope_ntk_beta=16.0,
                   swiglu_limit=1.0), 5, 512, 4),
}
EPS_TOKEN = 7  # in "traps": an embedding row of RMS ~3e-3, so RMSNorm's eps (1e-5) decides its first norm
EPS_EVERY = 61  # ... planted at every 61st position of the prompt


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits by truncation, as reference/writer.py stores random tensors (not tensorfile's rounding)."""
    return (np.asarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def conditioning(name: str, config: Config, seed: int) -> dict:
    """Stored tensors that replace a golden checkpoint's random ones (writer overrides), deterministic in
    (config, seed). Only "traps" has any: experts' first matrix x4 (a tenth and more of gate and linear values
    beyond the limit, some beyond twice it), router weights /4 with a bias of 3, 1, -1, -3 (rolled per layer),
    sinks x3, expert biases x5, and one tiny embedding row (EPS_TOKEN)."""
    if name != "traps":
        return {}
    exp = expected_tensors(config)

    def scaled(tensor, k):
        shape, kind = exp[tensor]
        return _bf16_bits(bf16_bits_to_f32(random_tensor(config, tensor, shape, kind, seed)) * np.float32(k))

    ov = {"embedding.weight": scaled("embedding.weight", 1.0)}
    emb = bf16_bits_to_f32(ov["embedding.weight"]).copy()
    emb[EPS_TOKEN] *= np.float32(3e-3)
    ov["embedding.weight"] = _bf16_bits(emb)
    for n in range(config.num_hidden_layers):
        m = f"block.{n}.mlp."
        shape, kind = exp[m + "mlp1_weight.scales"]
        ov[m + "mlp1_weight.scales"] = random_tensor(config, m + "mlp1_weight.scales", shape, kind, seed) + np.uint8(2)
        ov[m + "gate.weight"] = scaled(m + "gate.weight", 0.25)
        ov[m + "gate.bias"] = _bf16_bits(np.roll(np.array([3.0, 1.0, -1.0, -3.0]), n))
        ov[m + "mlp1_bias"], ov[m + "mlp2_bias"] = scaled(m + "mlp1_bias", 5.0), scaled(m + "mlp2_bias", 5.0)
        ov[f"block.{n}.attn.sinks"] = scaled(f"block.{n}.attn.sinks", 3.0)
    return ov


def prompt_of(name: str, model: Model, T: int, seed: int) -> list[int]:
    tokens = pick_prompt(model, T, seed, candidates=1 if name == "traps" else 12)
    if name == "traps":
        tokens[::EPS_EVERY] = [EPS_TOKEN] * len(tokens[::EPS_EVERY])
    return tokens


def progress(i: int, n: int, what: str) -> None:
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {what[:50]:<50}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def route_margins(stages: dict, config: Config) -> np.ndarray:
    """(T, L): router logit gap between the A-th and (A+1)-th expert (inf with A == E)."""
    A, E = config.experts_per_token, config.num_experts
    out = []
    for n in range(config.num_hidden_layers):
        s = -np.sort(-stages[f"block.{n}.mlp.router_logits"], axis=-1)
        out.append(s[:, A - 1] - s[:, A] if A < E else np.full(s.shape[0], np.inf))
    return np.stack(out, axis=1)


def pick_prompt(model: Model, T: int, seed: int, candidates: int = 12) -> list[int]:
    """Among a few random prompts, the one whose closest routing decision is clearest (so a bf16 port's
    routing agrees with the reference's and logits can be compared tightly everywhere)."""
    rng = np.random.default_rng(1000 + seed)
    best, best_margin = None, -1.0
    for _ in range(candidates):
        tokens = rng.integers(0, model.config.vocab_size, size=T).tolist()
        st = {}
        model.forward(tokens, model.new_cache(), capture=st)
        m = float(np.min(route_margins(st, model.config)))
        if m > best_margin:
            best, best_margin = tokens, m
    return best


def model_case(ckpt_dir: Path, tokens: list[int], steps: int, baseline_cache: bool = True, report=None) -> dict:
    """Reference tokens, stages, logits, greedy continuation; baseline errors per stage and dtype."""
    model = Model(ckpt_dir)
    c = model.config
    stages: dict = {}
    logits = model.forward(tokens, model.new_cache(), capture=stages)
    out = {"tokens": np.asarray(tokens, dtype=np.int64), "logits": logits}
    for name, value in stages.items():
        out["stage." + name] = np.asarray(value)
    out["route_margin"] = route_margins(stages, c)
    cache = model.new_cache()
    step_logits = model.forward(tokens, cache)[-1]
    greedy, margins, rows = [], [], []
    for i in range(steps):
        rows.append(step_logits)
        s = np.sort(step_logits)[::-1]
        greedy.append(int(np.argmax(step_logits)))
        margins.append(float(s[0] - s[1]))
        if report:
            report(f"greedy step {i + 1}/{steps}")
        if i + 1 < steps:
            step_logits = model.forward([greedy[-1]], cache)[-1]
    out["greedy.tokens"] = np.asarray(greedy, dtype=np.int64)
    out["greedy.margins"] = np.asarray(margins)
    out["greedy.logits"] = np.stack(rows)  # (steps, V): row i is the logits that chose greedy token i
    full: dict = {}
    model.forward(tokens + greedy[:-1], model.new_cache(), capture=full)
    out["greedy.route_margin"] = route_margins(full, c)[len(tokens) - 1:]  # (steps, L)
    for dt in CLASSES:  # model cases carry every precision class; op vectors the plain dtypes
        out |= baseline_errors(ckpt_dir, tokens, stages, logits, dt, cache=baseline_cache)
        if report:
            report(f"baseline {dt}")
    return out


def baseline_errors(ckpt_dir: Path, tokens, stages: dict, logits: np.ndarray, precision: str,
                    cache: bool = True) -> dict:
    """golden/baseline.py's error against the reference on one case in one precision class: per stage, the
    top-5 |Δ log p|, and the largest router-logit error (which sets the case's clear routing positions)."""
    bm, bst, out = B.BaselineModel(ckpt_dir, precision, cache=cache), {}, {}
    with torch.no_grad():
        bl = bm.forward(tokens, bst).double().numpy()
    for name in stages:
        if name in bst:
            out[f"baseline.{precision}.{name}"] = np.float64(err(bst[name].double().numpy(), stages[name]))
    out[f"baseline.{precision}.logprob"] = np.float64(logprob_err(bl, logits))
    L = bm.c.num_hidden_layers
    rl = np.stack([bst[f"block.{n}.mlp.router_logits"].double().numpy() for n in range(L)], 1)
    ref_rl = np.stack([stages[f"block.{n}.mlp.router_logits"] for n in range(L)], 1)
    out[f"baseline.{precision}.router_abs"] = np.float64(np.max(np.abs(rl - ref_rl)))
    return finite(out, f"{Path(ckpt_dir).name} in {precision}")


def finite(errors: dict, what: str) -> dict:
    """The baseline's errors, refused if one is not finite: it would make that bound infinite (golden/metric.py)."""
    bad = [k for k, v in errors.items() if not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"golden/baseline.py's error is not finite for {what}: {', '.join(bad[:3])}")
    return errors


# -- op vectors ---------------------------------------------------------------------------------------
MXFP4_SCALES = [0, 1, 2, 64, 100, 110, 118, 121, 124, 126, 127, 128, 130, 137, 150, 190, 252, 253, 254]
ROPE_CONFIGS = [(64, 150000.0, 32.0, 4096, 1.0, 32.0), (16, 150000.0, 32.0, 4096, 1.0, 32.0),
                (64, 150000.0, 1.0, 4096, 1.0, 32.0), (8, 10000.0, 8.0, 512, 1.0, 32.0)]
ROPE_POSITIONS = [0, 1, 2, 3, 7, 31, 100, 127, 128, 129, 511, 512, 1000, 4095, 4096, 4097, 8191, 16384,
                  32767, 65536, 100000, 131071, 131072]


def _baseline_errs(fn, ref, dtypes=BASELINE_DTYPES) -> dict:
    out = {}
    for dt in dtypes:
        with torch.no_grad():
            got = fn(B.DTYPES[dt])
        out[dt] = err(got.double().numpy() if isinstance(got, torch.Tensor) else got, ref)
    return finite(out, "an op case")


def _t(x, dtype):
    return B.t64(x).to(dtype)


def ops_mxfp4() -> dict:
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every byte value: 16 blocks of 16 bytes
    S = len(MXFP4_SCALES)
    blocks = np.broadcast_to(codes, (S, 16, 16)).copy()
    scales = np.repeat(np.asarray(MXFP4_SCALES, dtype=np.uint8)[:, None], 16, axis=1)  # (S, 16)
    rng = np.random.default_rng(7)
    mixed_b = rng.integers(0, 256, size=(3, 8, 16), dtype=np.uint8)
    mixed_s = rng.integers(110, 135, size=(3, 8), dtype=np.uint8)
    return {"c0.blocks": blocks, "c0.scales": scales, "c0.out": mxfp4.decode(blocks, scales),
            "c1.blocks": mixed_b, "c1.scales": mixed_s, "c1.out": mxfp4.decode(mixed_b, mixed_s)}


def ops_rope() -> dict:
    out = {}
    pos = np.asarray(ROPE_POSITIONS, dtype=np.int64)
    for i, (D, theta, f, icl, a, b) in enumerate(ROPE_CONFIGS):
        inv, conc = inv_freq_and_concentration(D, theta, f, icl, a, b)
        cos, sin = cos_sin(pos, inv, conc)
        out |= {f"c{i}.positions": pos, f"c{i}.params": np.asarray([D, theta, f, icl, a, b], dtype=np.float64),
                f"c{i}.cos": cos, f"c{i}.sin": sin, f"c{i}.angles": np.einsum("t,f->tf", pos.astype(np.float64), inv)}
        for dt in BASELINE_DTYPES:
            c_, s_ = B.cos_sin(pos, D, theta, f, icl, a, b, B.DTYPES[dt])
            out[f"c{i}.baseline.{dt}"] = np.float64(max(err(c_.double().numpy(), cos),
                                                        err(s_.double().numpy(), sin)))
    return out


# (T, S, H, K, D, window, sink mean, sink std, query offset) for the attention vectors
ATTN_CASES = [(8, 8, 4, 4, 16, 0, 0.0, 1.0, 0), (12, 12, 8, 2, 16, 4, 0.0, 1.0, 0),
              (1, 20, 8, 2, 16, 0, 0.0, 1.0, 19), (1, 20, 8, 2, 16, 5, 0.0, 1.0, 19),
              (6, 6, 4, 1, 8, 0, 30.0, 1.0, 0), (6, 6, 4, 2, 8, 3, -40.0, 1.0, 0),
              (5, 9, 6, 3, 16, 3, 0.0, 4.0, 4), (4, 4, 64, 8, 64, 2, 0.0, 1.0, 0)]


def ops_attention() -> dict:
    rng = np.random.default_rng(11)
    out = {}
    for i, (T, S, H, K, D, W, sm, ss, off) in enumerate(ATTN_CASES):
        q, k, v = (rng.standard_normal((n, h, D)) for n, h in ((T, H), (S, K), (S, K)))
        q, k = q * 1.5, k * 1.5  # scores of a few units: softmax far from uniform
        sinks = sm + ss * rng.standard_normal(H)
        q_pos = np.arange(off, off + T, dtype=np.int64)
        k_pos = np.arange(S, dtype=np.int64)
        if i == 6:
            q_pos = q_pos - 6  # the first query sees no key at all: all weight on the sink, output zero
        ref = sdpa(q.reshape(T, K, H // K, D), k, v, sinks.reshape(K, H // K), q_pos, k_pos, W or None)
        ref = ref.reshape(T, H, D)
        out |= {f"c{i}.q": q, f"c{i}.k": k, f"c{i}.v": v, f"c{i}.sinks": sinks, f"c{i}.q_pos": q_pos,
                f"c{i}.k_pos": k_pos, f"c{i}.window": np.int64(W), f"c{i}.sm_scale": np.float64(1 / math.sqrt(D)),
                f"c{i}.out": ref}
        errs = _baseline_errs(lambda dt: B.sdpa(_t(q, dt), _t(k, dt), _t(v, dt), _t(sinks, dt), 1 / math.sqrt(D),
                                                W, q_pos, k_pos), ref)
        out |= {f"c{i}.baseline.{dt}": np.float64(e) for dt, e in errs.items()}
    return out


ROUTE_CASES = [(4, 1), (8, 2), (8, 4), (32, 4), (128, 4), (6, 3)]


def ops_route() -> dict:
    """Router logits with a clear margin (>= 0.25) between consecutive chosen experts and the next one."""
    rng = np.random.default_rng(13)
    out = {}
    for i, (E, A) in enumerate(ROUTE_CASES):
        T = 16
        top = 2.0 + np.cumsum(-(0.25 + rng.random((T, A + 1))), axis=1)  # (T, A+1) descending, gaps >= 0.25
        rest = top[:, -1:] - 0.25 - 2.0 * rng.random((T, E - A - 1)) if E > A + 1 else np.zeros((T, 0))
        vals = np.concatenate([top, rest], axis=1)[:, :E]
        logits = np.stack([vals[t, rng.permutation(E)] for t in range(T)]) * (1 + 2 * rng.random((T, 1)))
        ids, w = route(logits, A)
        out |= {f"c{i}.logits": logits, f"c{i}.k": np.int64(A), f"c{i}.ids": ids.astype(np.int64), f"c{i}.weights": w}
        errs = _baseline_errs(lambda dt: B.route(_t(logits, dt), A)[1].double(), w)
        out |= {f"c{i}.baseline.{dt}": np.float64(e) for dt, e in errs.items()}
    return out


def ops_swiglu() -> dict:
    out = {}
    g = np.linspace(-12.0, 12.0, 49)  # crosses both clamps of limit 7 and of limit 2.5
    for i, limit in enumerate([7.0, 2.5]):
        gate, linear = np.meshgrid(g, g[::-1] * 1.1, indexing="ij")
        h = np.empty((gate.shape[0], 2 * gate.shape[1]))
        h[:, 0::2], h[:, 1::2] = gate, linear  # interleaved columns, as mlp1 writes them
        ref = swiglu(h, limit)
        out |= {f"c{i}.h": h, f"c{i}.limit": np.float64(limit), f"c{i}.out": ref}
        errs = _baseline_errs(lambda dt: B.swiglu(_t(h, dt), limit), ref)
        out |= {f"c{i}.baseline.{dt}": np.float64(e) for dt, e in errs.items()}
    return out


def ops_rms_norm() -> dict:
    rng = np.random.default_rng(17)
    out = {}
    for i, (C, mag) in enumerate([(64, 1.0), (64, 1e-3), (2880, 1.0), (64, 100.0), (32, 3e-3)]):
        x = rng.standard_normal((2 if C > 64 else 8, C)) * mag
        scale = 1.0 + 0.2 * rng.standard_normal(C)
        ref = rms_norm(x, scale)
        out |= {f"c{i}.x": x, f"c{i}.scale": scale, f"c{i}.eps": np.float64(1e-5), f"c{i}.out": ref}
        errs = _baseline_errs(lambda dt: B.rms_norm(_t(x, dt), _t(scale, dt)), ref)
        out |= {f"c{i}.baseline.{dt}": np.float64(e) for dt, e in errs.items()}
    return out


OPS = {"mxfp4": ops_mxfp4, "rope": ops_rope, "attention": ops_attention, "route": ops_route,
       "swiglu": ops_swiglu, "rms_norm": ops_rms_norm}
assert set(OPS) == set(OP_NAMES), "golden/format.py names the op vectors the kit reads"

# -- driver ---------------------------------------------------------------------------------------------
def generate(root: Path = DATA_DIR, only: list[str] | None = None, skip_ops: bool = False) -> dict:
    root = Path(root)
    names = only or list(CHECKPOINTS)
    steps = len(names) + (0 if skip_ops else len(OPS) + 1)
    done = 0
    checkpoints, hashes = {}, {}
    for name in CHECKPOINTS:
        config, seed, T, greedy = CHECKPOINTS[name]
        checkpoints[name] = {"config": config.to_json(), "seed": seed, "layout": "original"}
        if name not in names:
            continue
        progress(done, steps, f"checkpoint {name}")
        d = write_checkpoint(root / "checkpoints" / name, config, seed=seed,
                             overrides=conditioning(name, config, seed))
        tokens = prompt_of(name, Model(d), T, seed)
        save_npz(root / "cases" / f"{name}.npz", model_case(d, tokens, greedy))
        for form in derived.DERIVED:
            for f in sorted(derived.write(root, form, name).iterdir()):
                hashes[f"derived/{form}/{name}/{f.name}"] = sha256(f)
        done += 1
    if not skip_ops:
        for op, fn in OPS.items():
            progress(done, steps, f"op vectors {op}")
            save_npz(root / "ops" / f"{op}.npz", fn())
            done += 1
        progress(done, steps, "text vectors")
        from golden.text import text_vectors  # harmony and the vocabulary, only when text vectors are made
        write_json(root / "text" / "vectors.json", text_vectors())
        done += 1
    progress(done, steps, "manifest")
    if only and (root / "manifest.json").is_file():  # keep the other checkpoints' derived hashes
        old = json.loads((root / "manifest.json").read_text()).get("derived", {})
        hashes = {**{k: v for k, v in old.items() if k.split("/")[2] not in names}, **hashes}
    return write_manifest(root, hashes, {"checkpoints": checkpoints, "kind": "synthetic"})


def generate_from_checkpoint(path: Path, out: Path, prompts: list[list[int]], steps: int) -> dict:
    """Golden data from a user's own checkpoint (e.g. gpt-oss-20b's original/ folder, or an HF-layout folder such
    as a bf16 fine-tune with dense experts): cases only, the checkpoint referenced by path and its files' sha256
    recorded (the kit refuses to run if they change). Ports are handed this folder as it is."""
    path, out = Path(path).resolve(), Path(out)
    model = Model(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    hashes = {}
    n_total = len(files) + len(prompts) * (steps + len(CLASSES))
    count = [0]

    def report(what):
        count[0] += 1
        progress(min(count[0], n_total), n_total, what)

    for f in files:
        hashes[f.name] = sha256(f)
        report(f"hashing {f.name}")
    name = path.name if path.name != "original" else path.parent.name
    for i, tokens in enumerate(prompts):
        save_npz(out / "cases" / f"{name}-{i}.npz", model_case(path, tokens, steps, baseline_cache=False,
                                                                  report=report))
    progress(n_total, n_total, "manifest")
    entry = {"path": str(path), "layout": model.ckpt.layout, "experts": model.ckpt.experts,
             "config": model.config.to_json(), "files": hashes}
    return write_manifest(out, {}, {"checkpoints": {f"{name}-{i}": entry for i in range(len(prompts))},
                                    "kind": "user-checkpoint"})

