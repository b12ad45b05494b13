#!/usr/bin/env bash
# Run HERE (not on the lent machine), before a device run: writes what the lent image lacks to .device/
# (git-ignored), for the run to carry. The image has no bpe-openai and no network, so without this the
# conformance kit's tokenizer and harmony checks fail there for want of o200k_base.tiktoken.
#
#   bash bench/device_prepare.sh        then: run(command="OUT=$OUT bash bench/device_check.sh", carry=[".device"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .device
# the sha256-checked vocabulary (reference/tokenizer.py); device_check.sh points GPT_OSS_KIT_O200K_BASE at it
$PY -c "from reference.tokenizer import write_o200k_base; print('wrote', write_o200k_base('.device'))"
