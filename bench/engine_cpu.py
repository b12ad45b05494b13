"""CPU benchmark (not a test): prefill and decode tokens/s of the reference, this engine (fp32, bf16) and HF
transformers' GptOssForCausalLM on one mid-size synthetic checkpoint, same weights, same dtype, same threads.

    nice python bench/engine_cpu.py [--threads 1] [--prompt 128] [--new 32] [--rounds 3]

The checkpoint (random weights, written once by reference.writer in both layouts) goes to /tmp/gpt-oss-bench;
transformers loads the HF-layout copy (it dequantizes MXFP4 experts to dense weights on CPU; this engine keeps
them packed). Prints a markdown table with ratios to transformers, all from this one run, and the weight bytes
each decode step must read (weight_bytes_per_token) with the bandwidth that this implies at the measured speed.
Batch 1 throughout; decode is measured after a prefill of --prompt tokens, greedy, over --new steps (the
reference: 2 steps).
Every implementation is loaded first, then measured in --rounds interleaved rounds, keeping each one's best:
on a shared machine a burst of other work then slows one round of everyone, not one implementation.
"""
import argparse
import os
import subprocess
import time
from pathlib import Path

import torch

from reference.config import Config

CONFIG = Config(num_hidden_layers=8, num_experts=32, experts_per_token=4, vocab_size=32768, hidden_size=768,
                intermediate_size=768, swiglu_limit=7.0, head_dim=64, num_attention_heads=12, num_key_value_heads=4,
                sliding_window=128, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
                rope_ntk_alpha=1.0, rope_ntk_beta=32.0)
ROOT = Path("/tmp/gpt-oss-bench")


def checkpoints():
    from reference.writer import write_checkpoint
    out = {}
    for layout in ("original", "hf"):
        path = ROOT / layout
        if not (path / "config.json").exists():
            write_checkpoint(path, CONFIG, seed=1, layout=layout)
        out[layout] = path
    return out


class ReferenceRunner:
    name = "reference (NumPy float64)"

    def __init__(self, path):
        from reference.model import Model
        self.model = Model(path)

    def run(self, prompt, steps):
        m, cache = self.model, self.model.new_cache()
        t = time.perf_counter()
        logits = m.forward(prompt, cache)
        pre = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            logits = m.forward([int(logits[-1].argmax())], cache)
        return len(prompt) / pre, steps / (time.perf_counter() - t)


class EngineRunner:
    def __init__(self, path, dtype, label, context):
        from optimized.generate import Engine
        self.name = f"optimized {label}"
        self.engine = Engine.load(path, "cpu", dtype, context=context)
        self.engine.generate([[1, 2, 3, 4, 5, 6, 7, 8]], 4)  # warm-up

    def run(self, prompt, steps):
        r = self.engine.generate([prompt], steps + 1)
        return r.prefill_tokens / r.prefill_s, r.decode_tokens / r.decode_s


class TransformersRunner:
    def __init__(self, path, dtype, label):
        from transformers.utils import logging
        from conformance.impls.transformers import load_hf_model
        logging.set_verbosity_error()
        self.name = f"transformers GptOssForCausalLM {label}"
        self.model = load_hf_model(str(path), dtype).eval()  # MXFP4 dequantized at load (dense experts)
        with torch.inference_mode():
            self.model(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]), use_cache=True)  # warm-up

    @torch.inference_mode()
    def run(self, prompt, steps):
        m, ids = self.model, torch.tensor([prompt])
        t = time.perf_counter()
        out = m(ids, use_cache=True)
        pre = time.perf_counter() - t
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(steps):
            out = m(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        return len(prompt) / pre, steps / (time.perf_counter() - t)


def commit() -> str:
    """The checkout's short commit (marked + when the tree has changes), for the printed header."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=Path(__file__).parent, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def weight_bytes_per_token(c, name: str) -> float | None:
    """Weight bytes one batch-1 decode step must read (the DRAM floor's numerator): the k routed experts, the
    attention and router projections, the unembedding. transformers reads dense experts (it dequantizes MXFP4
    at load on CPU); the engine reads them packed: 16 bytes + 1 scale byte per 32 weights, and its dense
    matrices in bf16 in both dtypes (the file's bf16, kept by a float32 model on CPU: checkpoint.placed_dtype).
    The reference decodes MXFP4 in float64 every step: not a memory-bound design, left out."""
    if name.startswith("reference"):
        return None
    el = 2 if "bf16" in name else 4
    expert = 3 * c.intermediate_size * c.hidden_size  # mlp1 (2I x C) + mlp2 (C x I) weights
    experts = c.num_hidden_layers * c.experts_per_token * expert * (el if name.startswith("transformers") else 17 / 32)
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim * c.hidden_size
    out = c.hidden_size * c.num_attention_heads * c.head_dim
    router = c.num_experts * c.hidden_size
    dense = c.num_hidden_layers * (qkv + out + router) + c.vocab_size * c.hidden_size
    return experts + dense * (2 if name.startswith("optimized") else el)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)  # more only on an idle machine: OpenMP stalls when shared
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = checkpoints()
    prompt = [(i * 7919) % CONFIG.vocab_size for i in range(args.prompt)]
    context = args.prompt + args.new + 8
    runners = [ReferenceRunner(paths["original"])]
    for label, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        runners += [TransformersRunner(paths["hf"], dt, label), EngineRunner(paths["original"], dt, label, context)]
    best = {r.name: (0.0, 0.0) for r in runners}
    for _ in range(args.rounds):  # interleaved rounds, best of each: a shared machine's bursts hit one round, not all
        for r in runners:
            pre, dec = r.run(prompt, 2 if isinstance(r, ReferenceRunner) else args.new)
            best[r.name] = (max(best[r.name][0], pre), max(best[r.name][1], dec))
    rows = [(r.name, *best[r.name]) for r in runners]
    base = {"fp32": rows[1], "bf16": rows[3]}
    c = CONFIG
    print(f"\nconfig: {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_experts} experts "
          f"(top-{c.experts_per_token}),"
          f" vocab {c.vocab_size}; batch 1, prompt {args.prompt}, decode {args.new} (reference: 2); "
          f"best of {args.rounds} interleaved rounds; "
          f"torch threads {args.threads}; torch {torch.__version__}, {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}\n")
    print("| implementation | prefill tok/s | decode tok/s | prefill vs transformers | decode vs transformers "
          "| weight MB read per decoded token | implied GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, pre, dec in rows:
        b = base["bf16" if "bf16" in name else "fp32"]
        nbytes = weight_bytes_per_token(c, name)
        mem = "- | -" if nbytes is None else f"{nbytes / 1e6:.1f} | {nbytes * dec / 1e9:.1f}"
        print(f"| {name} | {pre:.1f} | {dec:.2f} | {pre / b[1]:.2f}x | {dec / b[2]:.2f}x | {mem} |")


if __name__ == "__main__":
    main()
