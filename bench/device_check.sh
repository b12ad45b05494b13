#!/usr/bin/env bash
# The prepared device check: everything a lent GPU machine should run, in at most 6 minutes, in one go.
#
#   OUT=/some/dir bash bench/device_check.sh        (from the repository root; $OUT defaults to ./device_out)
#
# Assumes the lent image: torch (CUDA) and triton preinstalled, no network, this repository as the cwd; nothing
# is installed. Run bench/device_prepare.sh first where the repository is checked out and carry .device (the
# tokenizer's vocabulary, which the image lacks). Stages, each with its own time limit (cut further so the total
# stays under BUDGET seconds):
#   1. environment: GPU, driver, torch/triton versions
#   2. kernel tests on the GPU that only a GPU can run (bf16, real 20b/120b shapes, CUDA-graph capture)
#   3. bench/gpu.py: both models with the Triton backend; then the MoE decode tile sweep (20b, batch 1), and
#      20b decode with programmatic dependent launch (the A/B for kernels/pdl.py), with the qkv projection and
#      RoPE + cache write apart (the A/B for qkv_rope_cache_write), with the projections unfused (cuBLAS: the A/B
#      for kernels/linear.py), then also RoPE + cache write and RMSNorm (the A/B for kernels/rope_cache.py,
#      rms_norm.py)
#   4. the conformance kit on CUDA: `--impl optimized --device cuda` if the kit has a --device option, else a
#      factory written below (the optimized adapter on cuda, bf16, with the Triton ops), golden data as is
#   5. the engine's GPU check (bench/gpu_check.py), the decode projections alone (bench/gpu.py --linear-sweep:
#      linear kernel tiles vs the torch steps), the attention prefill tiles (--attn-sweep), the remaining kernel
#      tests (fp32 on the GPU), then a few rows of the engine's torch backend, then HF transformers (20b, dense
#      bf16 experts), then the kit's model checks on the dense-expert form (--layout hf-dense) if the budget has room
# Works in $WORK (a temporary folder unless set): one log per stage, bench_*.json, the certificate, summary.json.
# $OUT receives four files, since the device tool brings back at most 8: summary.json (stage statuses, test
# counts, every bench row), status.txt, decisions.txt (bench/decide.py: BENCHMARKS.md's waiting switches decided
# from the rows, also printed before the table) and device_logs.tar.gz (all of $WORK). Prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device_out}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# the lent image's interpreter with torch is python3 (/opt/torch/.venv/bin/python3); a bare `python` may not exist
PY=${PYTHON:-$(command -v python3 >/dev/null && echo python3 || echo python)}
BUDGET=${BUDGET:-355}
START=$SECONDS
declare -A STATUS

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run with min(limit, what is left of the budget)
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "== $name: skipped, budget spent" | tee "$WORK/$name.log"
        STATUS[$name]="skipped (budget)"
        return
    fi
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    STATUS[$name]="rc=$rc $((SECONDS - t0))s$([[ $rc == 124 || $rc == 137 ]] && echo ' TIMEOUT')"
    echo "   ${STATUS[$name]}; last lines:"
    tail -n 4 "$WORK/$name.log" | sed 's/^/   | /'
}

stage env 20 bash -c "nvidia-smi; $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, torch.cuda.get_device_name())'; git rev-parse HEAD 2>/dev/null || true"

# the kit's text checks need o200k_base.tiktoken; the image has no bpe-openai and no network:
# bench/device_prepare.sh, run where the repository was checked out, writes it to .device/ for the run to carry
if [[ -z "${GPT_OSS_KIT_O200K_BASE:-}" && -f .device/o200k_base.tiktoken ]]; then
    export GPT_OSS_KIT_O200K_BASE=$PWD/.device/o200k_base.tiktoken
fi
$PY -c "from reference.tokenizer import o200k_base_bytes; o200k_base_bytes()" >"$WORK/tokenizer.log" 2>&1 \
    && STATUS[tokenizer]="found" \
    || STATUS[tokenizer]="MISSING: the kit's text checks fail; run bench/device_prepare.sh and carry .device"
echo "== tokenizer vocabulary: ${STATUS[tokenizer]}"

KERNEL_TESTS="tests/test_kernels_route.py tests/test_kernels_moe.py tests/test_kernels_attention.py"
KERNEL_TESTS="$KERNEL_TESTS tests/test_kernels_rope_cache.py tests/test_kernels_rms_norm.py tests/test_kernels_linear.py"
KERNEL_TESTS="$KERNEL_TESTS tests/test_kernels_pdl.py"
# bf16, real shapes, CUDA graphs and the sync-free prefill first (what only a GPU can check); fp32 after the benchmark
stage kernel_tests_gpu 100 $PY -m pytest -q -rs -p no:cacheprovider $KERNEL_TESTS \
    tests/test_kernels_engine.py::test_prefill_has_no_host_sync tests/test_kernels_engine.py::test_engine_run_has_no_host_sync \
    -k "bfloat16 or real_shapes or cuda_graph or host_sync"
stage bench_triton 130 $PY bench/gpu.py --models 20b,120b --backends triton --json "$WORK/bench_triton.json"
stage moe_sweep 50 $PY bench/gpu.py --models 20b --skip attention,engine --moe-sweep --json "$WORK/bench_sweep.json"
# the A/Bs (issue 7, 8): engine decode with programmatic dependent launch (triton-pdl: kernels/pdl.py, off by
# default; triton-pdl-noprefetch: without the projections' L2 weight prefetch before the wait), with the qkv
# projection and RoPE + cache write as two kernels (triton-split-qkv), with the projections as cuBLAS + separate
# RMSNorm and residual add (triton-cublas), then also RoPE + cache write and RMSNorm as torch steps
# (triton-unfused); each row's "engine kernels" line counts its launches
stage bench_unfused 85 $PY bench/gpu.py --models 20b \
    --backends triton-pdl,triton-pdl-noprefetch,triton-split-qkv,triton-cublas,triton-unfused --skip moe,attention --batches 1 --contexts 1024 --prefill "" --json "$WORK/bench_unfused.json"

# the kit on CUDA with the Triton ops (`--impl optimized --device cuda` alone would certify the torch ops)
if [[ -d conformance ]]; then
    cat >"$WORK/impl_cuda_triton.py" <<'EOF'
"""The optimized adapter on CUDA in bf16 with the Triton ops (engine backend and op-level functions)."""
import numpy as np
import torch

from optimized.adapter import OptimizedImpl
from optimized.ops import get_backend


class CudaTritonImpl(OptimizedImpl):
    def __init__(self, checkpoint_dir):
        super().__init__(checkpoint_dir, "bf16", "cuda")
        self.ops = get_backend("triton")
        self.engine.model.ops = self.ops
        self.name = "optimized (bf16, cuda, triton ops)"

    def op_route(self, router_logits, k):
        ids, w = self.ops.route(self._t(router_logits), k)
        return ids.cpu().numpy().astype(np.int64), w.float().cpu().numpy()

    def op_attention(self, q, k, v, sinks, sm_scale, window, q_pos, k_pos):
        dev = self.device
        qp = torch.as_tensor(np.asarray(q_pos, np.int64), device=dev)[None]
        kp = torch.as_tensor(np.asarray(k_pos, np.int64), device=dev)[None]
        s = torch.as_tensor(np.asarray(sinks, np.float64), device=dev).float()
        o = self.ops.attention(self._t(q)[None], self._t(k)[None], self._t(v)[None], s, float(sm_scale),
                               int(window), qp, kp)
        return o[0].float().cpu().numpy()


def factory(checkpoint_dir):
    return CudaTritonImpl(checkpoint_dir)
EOF
    stage conformance 50 $PY -m pytest -q -p no:cacheprovider conformance/ --impl "$WORK/impl_cuda_triton.py:factory" \
        --dtype bfloat16 --certificate "$WORK/certificate"
else
    STATUS[conformance]="skipped (no conformance/)"
fi

# the engine's own GPU checks: CUDA-graph decode == eager, triton backend == torch, plan_memory == allocated
stage engine_gpu_check 60 $PY bench/gpu_check.py --device cuda
# issue 8's memory goal: gpt-oss-120b through a whole 32768-token context on this one card (peak vs card vs plan)
stage fit_120b_32k 60 $PY bench/gpu_check.py --device cuda --fit
# the decode projections alone at batch 1 (qkv, out, router, unembedding): the linear kernel's tiles against the
# torch steps (what LINEAR_CONFIG and the fused RMSNorm should be), qkv + RoPE + cache write in one kernel or two
stage linear_sweep 30 $PY bench/gpu.py --models 20b --skip moe,attention,engine --linear-sweep \
    --json "$WORK/bench_linear.json"
# the attention prefill (8k prompt, full and windowed layer) with each ATTN_SWEEP tile: the A/B for attention.tiles
stage attn_sweep 40 $PY bench/gpu.py --models 20b --skip moe,attention,engine --attn-sweep --attn-prefill 8192 \
    --json "$WORK/bench_attn.json"

stage kernel_tests_rest 40 $PY -m pytest -q -rs -p no:cacheprovider $KERNEL_TESTS -k "not (bfloat16 or real_shapes or cuda_graph)"
stage bench_torch 30 $PY bench/gpu.py --models 20b --backends torch --skip moe,attention --batches 1,64 \
    --contexts 1024 --prefill 2048 --json "$WORK/bench_torch.json"
stage bench_hf 40 $PY bench/gpu.py --models 20b --backends triton --skip moe,attention,engine --hf --contexts 1024 \
    --prefill 2048 --json "$WORK/bench_hf.json"
# a fine-tune's dense bf16 experts on CUDA (the torch MoE steps, CUDA graphs within the gather bound): the model checks
stage conformance_dense 20 $PY -m pytest -q -p no:cacheprovider conformance/test_model.py --impl optimized \
    --device cuda --dtype bfloat16 --layout hf-dense

# -- summary: stage statuses, test counts, the headline numbers ----------------------------------------------
for k in "${!STATUS[@]}"; do echo "$k=${STATUS[$k]}"; done >"$WORK/status.txt"
$PY - "$WORK" <<'EOF'
import json, os, re, sys
out = sys.argv[1]
status = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(out, "status.txt")) if "=" in line)
summary = {"stages": status, "tests": {}, "bench": {}}
for name in ("kernel_tests_gpu", "kernel_tests_rest", "conformance", "conformance_dense"):
    p = os.path.join(out, name + ".log")
    if os.path.exists(p):
        tail = open(p, errors="replace").read()[-4000:]
        summary["tests"][name] = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
for name in ("bench_triton", "bench_sweep", "bench_unfused", "bench_linear", "bench_attn", "bench_torch", "bench_hf"):
    p = os.path.join(out, name + ".json")
    if os.path.exists(p):
        summary["bench"][name] = json.load(open(p))
p = os.path.join(out, "fit_120b_32k.log")  # bench/gpu_check.py --fit's FIT line: peak memory vs the card
if os.path.exists(p):
    summary["fit"] = [line.strip() for line in open(p, errors="replace") if line.startswith(("FIT ", "FAIL "))]
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
try:  # the switches BENCHMARKS.md leaves to this run, decided from the rows (bench/decide.py); never loses the table
    import importlib.util
    spec = importlib.util.spec_from_file_location("decide", os.path.join("bench", "decide.py"))
    decide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decide)
    text = decide.report(summary)
except Exception as e:  # noqa: BLE001
    text = f"bench/decide.py failed: {type(e).__name__}: {e}"
open(os.path.join(out, "decisions.txt"), "w").write(text + "\n")
print("\n" + text)
print("\n==== device check summary ====")
for k, v in sorted(status.items()):
    print(f"{k:14s} {v}  {summary['tests'].get(k, '')}")
bt = summary["bench"].get("bench_triton")
if bt:
    h = bt["header"]
    print(f"{h['device']}: copy {h['copy_GBps']:.0f} GB/s, bf16 matmul {h['matmul_TFLOPs']:.0f} TFLOP/s, commit {h['commit']}")
    print(f"{'model':6s} {'what':20s} {'backend':7s} {'setting':18s} {'ms':>9s} {'fraction':>8s}  note")
    more = [r for k in ("bench_sweep", "bench_unfused", "bench_linear", "bench_attn", "bench_torch", "bench_hf")
            for r in summary["bench"].get(k, {}).get("rows", [])]
    for r in bt["rows"] + more:
        keep = ("batch 1" in r["setting"] or "prefill" in r["what"] or r["what"] == "ERROR") and "sweep" not in r["what"]
        if "sweep" in r["what"]:
            print(f"{'sweep':6s} {r['setting']:18s} {r['ms']:9.4f} ms {r['fraction']:8.3f}  "
                  f"{r['note'].split('; ', 1)[-1]}")
        if keep:
            print(f"{r['model']:6s} {r['what']:20s} {r['backend']:7s} {r['setting']:18s} {r['ms']:9.3f} "
                  f"{r['fraction']:8.3f}  {r['note']}")
    for m, a in h["anchors"].items():
        print(f"anchor {m}: floor {a['floor_gb_per_token']} GB/token -> {h['copy_GBps'] / a['floor_gb_per_token']:.0f} "
              f"tok/s on this card; SGLang {a['sglang_tok_s']} tok/s")
EOF
cp "$WORK/summary.json" "$WORK/status.txt" "$WORK/decisions.txt" "$OUT/" 2>/dev/null
tar czf "$OUT/device_logs.tar.gz" -C "$WORK" .
echo "total $((SECONDS - START))s; summary.json, status.txt, decisions.txt and device_logs.tar.gz (every log and JSON)" \
    "in $OUT"
