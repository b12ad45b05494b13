#!/usr/bin/env bash
# The lent GPU image's Python side, checked on a machine without a GPU: a venv with the image's versions
# (/work/.library/device/KINDS.md: Python 3.12, torch 2.11.0, triton 3.6.0, numpy 2.5.2, transformers 5.17.0; no
# bpe-openai, no openai-harmony), then the tests that do not need the Triton interpreter under numpy 2.5.2, and the
# interpreter's (kernels, engine, PDL, benchmark smoke) under numpy 2.3.5 (triton 3.6's interpreter breaks on 2.4+;
# a GPU does not use it), then the device check end to end (its GPU stages fail fast without CUDA).
#
#   bash bench/image_check.sh                 # VENV=/tmp/venv-image PY312=python3.12 by default; ~4 GB download once
#
# Not part of CI (the download, and ~15 min): run it before a device run when torch/triton-facing code changed.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/venv-image}
if [[ -z "${PY312:-}" ]]; then  # the first candidate that really is a Python 3.12 (a pyenv shim may not be)
    for c in python3.12 /root/.pyenv/versions/3.12*/bin/python3; do
        "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { PY312=$c; break; }
    done
fi
[[ -n "${PY312:-}" ]] || { echo "image_check: no Python 3.12 found (set PY312)"; exit 2; }
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY312" -m venv "$VENV" || exit 2
    "$VENV/bin/pip" install -q torch==2.11.0 triton==3.6.0 numpy==2.5.2 safetensors tiktoken hypothesis pytest \
        transformers==5.17.0 accelerate || exit 2
fi
PY=$VENV/bin/python
versions() {
    $PY -c "import torch, triton, numpy, transformers; print('image venv: torch', torch.__version__, 'triton', \
triton.__version__, 'numpy', numpy.__version__, 'transformers', transformers.__version__)"
}
[[ -f .device/o200k_base.tiktoken ]] || PYTHON=${PYTHON:-python3} bash bench/device_prepare.sh
export GPT_OSS_KIT_O200K_BASE=$PWD/.device/o200k_base.tiktoken PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
rc=0
$PY -m pip install -q numpy==2.5.2 && versions
# not here: tests named triton (the interpreter), test_resolution_order (it checks bpe-openai's place in the order)
$PY -m pytest -q -p no:cacheprovider tests/test_ref_*.py tests/test_optimized_*.py tests/test_conformance*.py \
    tests/test_tokenizer.py tests/test_harmony_*.py tests/test_golden_text.py tests/test_bench_decide.py \
    -k "not triton and not resolution_order" || rc=1
$PY -m pip install -q numpy==2.3.5 && versions
$PY -m pytest -q -p no:cacheprovider tests/test_bench_gpu_smoke.py tests/test_kernels_engine.py \
    tests/test_optimized_engine.py tests/test_kernels_pdl.py tests/test_kernels_route.py \
    tests/test_kernels_rope_cache.py tests/test_kernels_linear.py tests/test_kernels_rms_norm.py || rc=1
OUT=${OUT:-/tmp/image_check_out} PYTHON=$PY BUDGET=${BUDGET:-120} bash bench/device_check.sh | tail -n 20
exit $rc
