"""CPU benchmark (not a test): prefill and decode tokens/s of the reference, this engine (fp32, bf16) and HF
transformers' GptOssForCausalLM on one mid-size synthetic checkpoint, same weights, same dtype, same threads.

    nice python bench/engine_cpu.py [--threads 2] [--prompt 128] [--new 32]

The checkpoint (random weights, written once by reference.writer in both layouts) goes to /tmp/gpt-oss-bench;
transformers loads the HF-layout copy (it dequantizes MXFP4 experts to dense weights on CPU; this engine keeps
them packed). Prints a markdown table with ratios to transformers, all from this one run. Batch 1 throughout;
decode is measured after a prefill of --prompt tokens, greedy, over --new steps (the reference: 4 steps).
"""
import argparse
import os
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


def bench_reference(path, prompt, steps):
    from reference.model import Model
    m = Model(path)
    cache = m.new_cache()
    t = time.perf_counter()
    logits = m.forward(prompt, cache)
    pre = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        logits = m.forward([int(logits[-1].argmax())], cache)
    return len(prompt) / pre, steps / (time.perf_counter() - t)


def bench_engine(path, dtype, prompt, steps):
    from optimized.generate import Engine
    engine = Engine.load(path, "cpu", dtype, context=len(prompt) + steps + 8)
    engine.generate([prompt[:8]], 4)  # warm-up
    r = engine.generate([prompt], steps + 1)
    return r.prefill_tokens / r.prefill_s, r.decode_tokens / r.decode_s


@torch.inference_mode()
def bench_transformers(path, dtype, prompt, steps):
    from transformers import GptOssForCausalLM
    from transformers.utils import logging
    logging.set_verbosity_error()
    m = GptOssForCausalLM.from_pretrained(str(path), dtype=dtype, device_map="cpu").eval()
    ids = torch.tensor([prompt])
    m(ids[:, :8], use_cache=True)  # warm-up
    t = time.perf_counter()
    out = m(ids, use_cache=True)
    pre = time.perf_counter() - t
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t = time.perf_counter()
    for _ in range(steps):
        out = m(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return len(prompt) / pre, steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = checkpoints()
    prompt = [(i * 7919) % CONFIG.vocab_size for i in range(args.prompt)]
    rows = [("reference (NumPy float64)", *bench_reference(paths["original"], prompt, 4))]
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        hf = bench_transformers(paths["hf"], dt, prompt, args.new)
        ours = bench_engine(paths["original"], dt, prompt, args.new)
        rows += [(f"transformers GptOssForCausalLM {name}", *hf), (f"optimized {name}", *ours)]
    base = {"fp32": rows[1], "bf16": rows[3]}
    c = CONFIG
    print(f"\nconfig: {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_experts} experts "
          f"(top-{c.experts_per_token}),"
          f" vocab {c.vocab_size}; batch 1, prompt {args.prompt}, decode {args.new} (reference: 4); "
          f"torch threads {args.threads}; torch {torch.__version__}, {os.cpu_count()} CPUs\n")
    print("| implementation | prefill tok/s | decode tok/s | prefill vs transformers | decode vs transformers |")
    print("|---|---:|---:|---:|---:|")
    for name, pre, dec in rows:
        b = base["bf16" if "bf16" in name else "fp32"]
        print(f"| {name} | {pre:.1f} | {dec:.2f} | {pre / b[1]:.2f}x | {dec / b[2]:.2f}x |")


if __name__ == "__main__":
    main()
