#!/usr/bin/env bash
# The one script a lent GPU machine runs, in a single call (< 8 minutes):
#   build the CUDA extension -> GPU parity tests -> benchmarks -> a short table printed last.
# Logs and the benchmark JSON go to $OUT when it is set (the device tool fetches them).
# Usage (repo root, on the GPU machine): bash benchmarks/gpu_check.sh
# Needs pytest, pytest-benchmark and hypothesis importable by python3 (carry wheels if absent,
# see /work/.library/device/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"9.0"}
export MAX_JOBS=${MAX_JOBS:-16}
export TRITON_INTERPRET=0   # compiled Triton kernels on the GPU (tests/conftest.py defaults to the interpreter)
status=0

echo "== device"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"

echo "== build"
if ! YOLOV9K_FORCE_CUDA=1 "$PY" setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
    tail -50 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import yolov9k, json; print(json.dumps(yolov9k.ops.backend_info()))" | tee "$OUT/backends.json"

echo "== GPU parity tests"
# Every GPU test has "cuda" in its name (tests/test_gpu.py and the test_cuda_* of other files);
# they skip without a GPU elsewhere, here every one must run. (The test_triton_* tests take CPU
# tensors under TRITON_INTERPRET=1 and do not run here.)
timeout 240 "$PY" -m pytest tests -q -p no:cacheprovider -rs -k cuda \
    2>&1 | tee "$OUT/tests.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmarks"
timeout 240 "$PY" -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
    --benchmark-json "$OUT/bench.json" --benchmark-columns=median,iqr,rounds > "$OUT/bench.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || { tail -30 "$OUT/bench.log"; status=1; }

echo "== table (median ms)"
"$PY" benchmarks/summarize.py "$OUT/bench.json" | tee "$OUT/table.md"
exit $status
