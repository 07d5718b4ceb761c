#!/usr/bin/env bash
# Builds the full CUDA extension (every csrc/cuda/*.cu, sm_80 + sm_90) against a CUDA build of
# torch and imports it — no GPU needed. Fails on any compile, link or import error.
# Why these flags: docs/building.md ("Compiling the CUDA sources without a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${YOLOV9K_CUDA_VENV:-$ROOT/.venv-cuda}
CUDA_TORCH=${YOLOV9K_CUDA_TORCH:-torch==2.14.1}   # cu130 build: matches nvcc 13.0
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
export MAX_JOBS=${MAX_JOBS:-2}

command -v "$CUDA_HOME/bin/nvcc" >/dev/null || { echo "nvcc not found under CUDA_HOME=$CUDA_HOME"; exit 1; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$CUDA_TORCH" ninja pybind11 numpy setuptools wheel

# Build in a scratch copy so the CPU build of the working tree is left alone.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z --cached --others --exclude-standard | grep -z -E '^(setup.py|pyproject.toml|README.md|csrc/|yolov9k/|kernels/)' \
    | xargs -0 -I{} cp --parents {} "$work"
cd "$work"
if ! YOLOV9K_FORCE_CUDA=1 "$VENV/bin/python" setup.py -q build_ext --inplace > build.log 2>&1; then
    tail -60 build.log; echo "CUDA build FAILED"; exit 1
fi
grep -iE "warning" build.log | grep -v -iE "setuptools|deprecat|license" | head -20 || true
ncu=$(ls csrc/cuda/*.cu | wc -l)
so=$(ls yolov9k/_C*.so)
"$VENV/bin/python" - "$ncu" "$so" <<'PY'
import sys

import torch

torch.ops.load_library(sys.argv[2])  # dlopen only: runs the registrations, imports no package code

version = torch.ops.yolov9k._cuda_version()
assert version > 0, f"extension was built without CUDA (version {version})"
ops = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("yolov9k::"))
cuda_ops = [op for op in ops if torch._C._dispatch_has_kernel_for_dispatch_key(f"yolov9k::{op}", "CUDA")]
print(f"CUDA build OK: runtime {version}, {sys.argv[1]} .cu files, ops {ops}, with CUDA kernels {cuda_ops}")
assert cuda_ops, "no op has a CUDA kernel"
PY
