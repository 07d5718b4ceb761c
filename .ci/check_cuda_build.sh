#!/usr/bin/env bash
# Builds the full CUDA extension (every csrc/cuda/*.cu, sm_80 + sm_90) against a CUDA build of
# torch and imports it — no GPU needed. Fails on any compile, link or import error, and on a spill in
# any kernel: ptxas reports (-Xptxas -v, through nvcc's NVCC_APPEND_FLAGS) registers, spill bytes,
# shared memory and stack per kernel and arch, printed as one table (--markdown FILE: also there).
# Why these flags: docs/building.md ("Compiling the CUDA sources without a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${YOLOV9K_CUDA_VENV:-$ROOT/.venv-cuda}
CUDA_TORCH=${YOLOV9K_CUDA_TORCH:-torch==2.14.1}   # cu130 build: matches nvcc 13.0
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
export MAX_JOBS=${MAX_JOBS:-2}
export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:+$NVCC_APPEND_FLAGS }-Xptxas -v"
MD=""
[ "${1:-}" = "--markdown" ] && MD=$(realpath -m "$2")

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
grep -iE "warning" build.log | grep -v -iE "setuptools|deprecat|license|ptxas info" | head -20 || true
# ptxas -v: "Compiling entry function 'X' for 'sm_NN'", then "Used R registers, ..." and the spills
python3 - build.log "$MD" <<'PY'
import re
import subprocess
import sys

entry = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
spill = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
used = re.compile(r"Used (\d+) registers")
smem = re.compile(r"(\d+) bytes smem")
rows, cur = {}, None
for line in open(sys.argv[1], errors="replace"):
    if m := entry.search(line):
        cur = rows.setdefault((m[1], m[2]), {"regs": 0, "stack": 0, "spill": 0, "smem": 0})
    elif cur is not None and (m := spill.search(line)):
        cur.update(stack=int(m[1]), spill=int(m[2]) + int(m[3]))
    elif cur is not None and (m := used.search(line)):
        cur.update(regs=int(m[1]), smem=int(s[1]) if (s := smem.search(line)) else 0)
if not rows:
    sys.exit("no ptxas -v output in the build log (NVCC_APPEND_FLAGS not honoured?)")
names = subprocess.run(["c++filt"], input="\n".join(k for k, _ in rows), capture_output=True, text=True).stdout


def shorten(name: str) -> str:
    name = name.replace("(anonymous namespace)::", "").removeprefix("void ")
    name = re.sub(r"cub::CUB_\w+::", "cub::", name)
    if name.startswith("cub::"):  # CUB's sort kernels (segmented sort of NMS): the kernel's name only
        return re.sub(r"<.*", "", name)
    return re.sub(r"\(.*", "", name)


short = {k: shorten(n) for (k, _), n in zip(rows, names.splitlines())}
head = ("kernel", "arch", "registers", "spill B", "stack B", "static smem B")
lines = [(short[k], a, r["regs"], r["spill"], r["stack"], r["smem"]) for (k, a), r in sorted(rows.items())]
widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
for line in (head, *lines):
    print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
if sys.argv[2]:
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
    open(sys.argv[2], "w").write("\n".join(md) + "\n")
spilled = [f"{n} {a}: {s} B" for n, a, _, s, _, _ in lines if s]
if spilled:
    sys.exit("CUDA kernels spill: " + "; ".join(spilled))
print(f"ptxas: {len(lines)} (kernel, arch) pairs, no spill")
PY
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
