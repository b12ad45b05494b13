"""GPU check of the engine (a script, not a test): run it on a CUDA machine as one short job.

    python bench/gpu_check.py [--device cuda] [--big]            # add --big for gpt-oss-120b shapes
    python bench/gpu_check.py --fit                              # gpt-oss-120b, a full 32768-token context

1. tiny checkpoints (written by reference.writer to a temp folder): fp32/bf16 logits vs the reference, decode
   with CUDA graphs == decode without (same greedy tokens, logits within 1e-5 fp32), ragged batch == alone,
   triton backend == torch backend (when optimized.kernels imports), and on CUDA the Triton decode with programmatic
   dependent launch (kernels/pdl.py) == without, bitwise;
2. gpt-oss-20b real shapes (synthetic weights built on the device, bf16): allocated bytes vs plan_memory,
   peak memory, prefill tok/s (2048 tokens) and decode tok/s at batch 1 and 8, graphs on and off;
3. with --big, the same for gpt-oss-120b at a 32768-token context.
With --fit, only the 120b memory goal (a whole context on one card): gpt-oss-120b (synthetic, bf16) fed a whole 32768-token context, a prompt
of 32764 tokens in the engine's prefill steps then 4 decode steps, its peak memory against the card's and
plan_memory's; a `FIT ...` line that bench/device_check.sh puts in its summary (on cpu: the tiny config, a smoke).
Prints PASS/FAIL lines and a markdown table; exit status 1 if any check fails. On --device cpu it runs part 1
without graphs (a smoke run of the script itself).
"""
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from optimized import memory  # noqa: E402
from optimized.generate import Engine  # noqa: E402
from optimized.model import Model  # noqa: E402
from optimized.synthetic import synthetic_weights  # noqa: E402
from reference import cli  # noqa: E402
from reference.config import GPT_OSS_20B, GPT_OSS_120B, Config  # noqa: E402

TINY = Config(num_hidden_layers=3, num_experts=4, experts_per_token=2, vocab_size=97, hidden_size=64,
              intermediate_size=32, swiglu_limit=7.0, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
              sliding_window=4, initial_context_length=4096, rope_theta=150000.0, rope_scaling_factor=32.0,
              rope_ntk_alpha=1.0, rope_ntk_beta=32.0)
TOKENS = [5, 17, 3, 88, 42, 42, 7, 0, 96, 13, 61, 29, 8, 71]
failures = []


def check(name: str, ok: bool, detail: str = ""):
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        failures.append(name)


def part_tiny(device):
    from reference.model import Model as RefModel
    from reference.writer import write_checkpoint
    path = write_checkpoint(tempfile.mkdtemp() + "/tiny", TINY, seed=3)
    ref = RefModel(path).logits(TOKENS)
    graphs = device == "cuda"
    for name, dt, bound in (("fp32", torch.float32, 1e-4), ("bf16", torch.bfloat16, 1.5)):
        model = Model.load(path, device, dt)
        eager = Engine(model, context=64, cuda_graphs=False)
        got = eager.logits(TOKENS).cpu().numpy()
        err = np.abs(got - ref).max()
        check(f"tiny {name} logits vs reference", err < bound, f"max err {err:.2e} (bound {bound})")
        rows = [TOKENS, TOKENS[:3], [9], TOKENS[4:13]]
        batch = eager.run(eager.fresh_cache(len(rows)), rows, all_logits=True)
        err = max(float((b - eager.logits(r)).abs().max()) for b, r in zip(batch, rows))
        check(f"tiny {name} ragged batch == alone", err < (1e-5 if name == "fp32" else 0.05), f"max err {err:.2e}")
        if graphs:
            fast = Engine(model, context=64, cuda_graphs=True)
            a = eager.generate([TOKENS[:5], TOKENS[:2]], 20)
            b = fast.generate([TOKENS[:5], TOKENS[:2]], 20)
            check(f"tiny {name} CUDA-graph decode tokens == eager", a.tokens == b.tokens)
            ca, cb = eager.fresh_cache(1), fast.fresh_cache(1)
            eager.run(ca, [TOKENS[:4]]), fast.run(cb, [TOKENS[:4]])
            err = max(float((eager.run(ca, [[t]]) - fast.run(cb, [[t]])).abs().max()) for t in TOKENS[4:])
            check(f"tiny {name} CUDA-graph decode logits == eager", err < (1e-5 if name == "fp32" else 0.05),
                  f"max err {err:.2e}, graphs captured: {len(fast._graphs)}")
        if device == "cpu" and dt == torch.bfloat16:
            print(f"SKIP tiny {name} triton backend: the Triton interpreter's bf16 stores are unreliable (CUDA only)")
            continue
        try:
            tri = Engine(Model.load(path, device, dt, backend="triton"), context=64, cuda_graphs=False)
        except Exception as e:  # noqa: BLE001  (reported, not hidden)
            check(f"tiny {name} triton backend loads", False, f"{type(e).__name__}: {e}")
            continue
        bound = 1e-4 if name == "fp32" else 1.5
        err = float((tri.logits(TOKENS).cpu() - torch.from_numpy(got)).abs().max())
        check(f"tiny {name} triton backend == torch backend (prefill)", err < bound, f"max err {err:.2e}")
        ct, ce = tri.fresh_cache(1), eager.fresh_cache(1)  # decode: the Triton RoPE + cache-write kernel
        tri.run(ct, [TOKENS[:4]]), eager.run(ce, [TOKENS[:4]])
        err = max(float((tri.run(ct, [[t]]).cpu() - eager.run(ce, [[t]]).cpu()).abs().max()) for t in TOKENS[4:])
        check(f"tiny {name} triton backend == torch backend (decode)", err < bound, f"max err {err:.2e}")
        if graphs:
            check_pdl(path, device, dt, name)


def check_pdl(path, device, dt, name):
    """Programmatic dependent launch (optimized/kernels/pdl.py) changes when kernels start, never what they
    compute: decode with CUDA graphs and the Triton backend, PDL on == off, bitwise."""
    from optimized.kernels import pdl
    steps = {}
    for on in (False, True):
        pdl.ENABLED = on
        try:
            engine = Engine(Model.load(path, device, dt, backend="triton"), context=64, cuda_graphs=True)
            cache = engine.fresh_cache(1)
            engine.run(cache, [TOKENS[:4]])
            steps[on] = torch.stack([engine.run(cache, [[t]]) for t in TOKENS[4:]]).cpu()
            check(f"tiny {name} PDL {'on' if on else 'off'}: graphs captured", len(engine._graphs) > 0)
        except Exception as e:  # noqa: BLE001  (reported, not hidden: e.g. a driver that cannot capture PDL)
            check(f"tiny {name} PDL {'on' if on else 'off'}: decode runs", False, f"{type(e).__name__}: {e}")
            return
        finally:
            pdl.ENABLED = False
    err = float((steps[True] - steps[False]).abs().max())
    check(f"tiny {name} PDL decode (CUDA graphs) == without, bitwise", torch.equal(steps[True], steps[False]),
          f"max err {err:.2e}")


def part_real(config, label, context, device, rows):
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    weights = synthetic_weights(config, device, torch.bfloat16)
    plan = memory.plan_memory(config, context, 1, "bf16")
    placed = torch.cuda.memory_allocated() - before
    check(f"{label} weights bytes == plan", weights.nbytes() == plan["weights"],
          f"{weights.nbytes()} vs {plan['weights']} (allocator {placed})")
    model = Model(weights)
    for batch in (1, 8):
        for graphs in (False, True):
            engine = Engine(model, context=context, cuda_graphs=graphs, max_batch=8)
            prompts = [[(i * 7919 + b) % config.vocab_size for i in range(2048)] for b in range(batch)]
            engine.generate([p[:16] for p in prompts], 4)  # warm-up (and graph capture)
            torch.cuda.synchronize()
            r = engine.generate(prompts, 65)
            kv = engine._cache.nbytes()
            plan_b = memory.plan_memory(config, context, batch, "bf16", prefill_chunk=engine.chunk_for(batch))
            check(f"{label} kv bytes == plan (batch {batch})", kv == plan_b["kv_cache"], f"{kv}")
            rows.append((label, context, batch, graphs, r.prefill_tokens / r.prefill_s, r.decode_tokens / r.decode_s,
                         torch.cuda.max_memory_allocated() / 2**30, plan_b["total"] / 2**30))
            del engine
            torch.cuda.empty_cache()
    del model, weights
    torch.cuda.empty_cache()


def part_fit(config, label, context, device, decode=4):
    """A whole context through the engine: the weights, the KV cache of `context` slots, a prompt of context - decode
    tokens in the engine's prefill steps, then `decode` steps. Checks it runs and, on CUDA, that its peak memory
    fits the card; prints the FIT line (peak, card, plan, prefill tok/s)."""
    cuda = device == "cuda"
    dt = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = Model(synthetic_weights(config, device, dt))
    engine = Engine(model, context=context, cuda_graphs=cuda, max_batch=1)
    prompt = [(i * 7919) % config.vocab_size for i in range(context - decode)]
    try:
        r = engine.generate([prompt], decode)
    except torch.OutOfMemoryError as e:  # the finding itself, not a crash of the check
        check(f"{label} context {context}: prompt and decode fit the card", False, str(e).splitlines()[0])
        return
    plan = memory.plan_memory(config, context, 1, "bf16" if cuda else "fp32", prefill_chunk=engine.chunk_for(1),
                              device=device)
    check(f"{label} context {context}: a {len(prompt)}-token prompt, then {decode} decode steps",
          r.prefill_tokens == len(prompt) and len(r.tokens[0]) == decode, f"{r.prefill_tokens} + {len(r.tokens[0])}")
    gib = 2 ** 30
    peak = torch.cuda.max_memory_allocated() / gib if cuda else float("nan")
    card = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / gib if cuda else float("nan")
    if cuda:
        check(f"{label} context {context}: peak memory fits the card", peak < card, f"{peak:.1f} of {card:.1f} GiB")
    print(f"FIT {label} context {context}: peak {peak:.1f} GiB, card {card:.1f} GiB, plan {plan['total'] / gib:.1f} "
          f"GiB, prefill {r.prefill_tokens / r.prefill_s:.0f} tok/s in steps of {engine.chunk_for(1)}", flush=True)
    del engine, model
    if cuda:
        torch.cuda.empty_cache()


def main():
    ap = cli.ArgumentParser(prog="python bench/gpu_check.py")  # usage errors: one line, exit 2 (a failed check: 1)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--fit", action="store_true", help="only gpt-oss-120b through a whole 32768-token context")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available (--device cpu runs the smoke part)")
    t = time.time()
    if args.fit:
        if args.device == "cuda":
            part_fit(GPT_OSS_120B, "gpt-oss-120b", 32768, "cuda")
        else:
            part_fit(TINY, "tiny (cpu smoke)", 64, "cpu")
        print(f"\n{len(failures)} failed checks {failures} in {time.time() - t:.0f} s")
        sys.exit(1 if failures else 0)
    part_tiny(args.device)
    rows = []
    if args.device == "cuda":
        part_real(GPT_OSS_20B, "gpt-oss-20b", 8192, "cuda", rows)
        if args.big:
            part_real(GPT_OSS_120B, "gpt-oss-120b", 32768, "cuda", rows)
        print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
        print("| model | context | batch | CUDA graphs | prefill tok/s | decode tok/s | peak GiB | plan GiB |")
        print("|---|---:|---:|---|---:|---:|---:|---:|")
        for m, c, b, g, p, d, peak, plan in rows:
            print(f"| {m} | {c} | {b} | {'on' if g else 'off'} | {p:.0f} | {d:.1f} | {peak:.2f} | {plan:.2f} |")
    print(f"\n{len(failures)} failed checks {failures} in {time.time() - t:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
