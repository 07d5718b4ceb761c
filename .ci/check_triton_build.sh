#!/usr/bin/env bash
# Compiles every Triton kernel specialisation the wrappers can launch for sm_80 and sm_90, with the
# Triton floor (3.6.0, its own venv) and the newest Triton (the CI venv's), without a GPU, and fails
# on a compile error, shared memory over a target's limit in a config the code can pick, or a spill
# in a default-path specialisation. How and why: .ci/triton_build.py (its docstring).
# Usage: bash .ci/check_triton_build.sh [--markdown FILE]   (PYTHON: the venv with yolov9k installed)
# YOLOV9K_TRITON_CHECK_PLANT=spill|smem plants a failure (shows that the check can fail).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
FLOOR=${YOLOV9K_TRITON_FLOOR:-3.6.0}
FLOOR_VENV=${YOLOV9K_TRITON_FLOOR_VENV:-$ROOT/.venv-triton-${FLOOR%.*}}
TARGETS=${YOLOV9K_TRITON_TARGETS:-80,90}
MD=""
[ "${1:-}" = "--markdown" ] && MD=$2
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# the floor Triton beside the CPU torch of CI (a CPU torch wheel does not pin Triton)
if [ ! -x "$FLOOR_VENV/bin/python" ]; then python3 -m venv "$FLOOR_VENV"; fi
"$FLOOR_VENV/bin/python" -m pip install -q "triton==$FLOOR" "$("$PY" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])')" numpy
newest=$("$PY" -c 'import triton; print(triton.__version__)')
echo "Triton floor $FLOOR ($FLOOR_VENV), newest $newest ($PY); targets sm_${TARGETS//,/, sm_}"

"$PY" .ci/triton_build.py collect "$work/launches.json"
# the two Triton versions one after the other, each compiling on both cores
"$FLOOR_VENV/bin/python" .ci/triton_build.py compile "$work/launches.json" "$work/rows-floor.json" --targets "$TARGETS" --jobs 2
"$PY" .ci/triton_build.py compile "$work/launches.json" "$work/rows-newest.json" --targets "$TARGETS" --jobs 2
status=0
"$PY" .ci/triton_build.py report "$work/rows-floor.json" "$work/rows-newest.json" ${MD:+--markdown "$MD"} || status=$?
echo "Triton build check took $(( $(date +%s) - start )) s"
exit $status
