#!/usr/bin/env bash
# The one script a lent GPU machine runs, in a single call (under 8 minutes):
#   install as a user does -> check packages and import every module -> GPU parity tests (every
#   test with "cuda" in its name must run and pass) -> GPU benchmarks -> one table, printed last,
#   and the speed of light of each GPU case (benchmarks/speed_of_light.py: bytes, FLOPs, the H200's
#   floor, measured / floor). A kernel failing its first-use check is an error here
#   (YOLOV9K_STRICT_KERNELS=1), never a silent fallback to the reference.
# Logs, the benchmark JSON and the table go to $OUT when it is set (the device tool brings them back).
#
# Usage (repo root): bash benchmarks/gpu_check.sh            on the GPU machine
#                    bash benchmarks/gpu_check.sh --dry-run  on a CPU machine (CI runs it): the same
#                    install and import checks, collection of every GPU test and GPU benchmark (each
#                    counted and checked), the benchmarks in quick mode, and the speed-of-light
#                    table with its floors only (measured column empty).
# Needs: python3 with torch (>= 2.11), triton (>= 3.6; GPU run), pytest, pytest-benchmark, hypothesis,
# numpy, pyyaml, opencv, pillow, tqdm, and setuptools, wheel, ninja, pybind11 to build. pycocotools is
# optional (its tests skip with a reason). Missing packages: carry wheels (docs/building.md).
set -uo pipefail
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]"; exit 2 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export YOLOV9K_STRICT_KERNELS=1 # a kernel that fails its first-use check fails the check
start=$(date +%s)
step() { printf '\n== [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
fail() { echo "GPU CHECK FAILED: $*"; exit 1; }
if [ "$DRY" -eq 0 ]; then
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"9.0"}
    export MAX_JOBS=${MAX_JOBS:-16}
    export TRITON_INTERPRET=0 # compiled Triton kernels (tests/conftest.py defaults to the interpreter)
    if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
        CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
        export CUDA_HOME
    fi
fi
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

step "machine (commit $commit, $(date -u +%Y-%m-%d))"
{
    [ "$DRY" -eq 1 ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
} 2>&1 | tee "$OUT/device.txt"

step "install (pip install --no-build-isolation --no-deps -e .$([ "$DRY" -eq 0 ] && echo ', CUDA forced'))"
# the GPU machine has 16 cores; a CPU machine may have 2 and compile from scratch
if [ "$DRY" -eq 0 ]; then export YOLOV9K_FORCE_CUDA=1; build_limit=300; else build_limit=900; fi
if ! timeout "$build_limit" "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT/install.log" 2>&1; then
    tail -40 "$OUT/install.log"; fail "install (log: $OUT/install.log)"
fi

step "packages, version floor, import of every module"
gpu_flag=$([ "$DRY" -eq 0 ] && echo --gpu)
# from outside the checkout: the package must come from the install, not from the current folder
(cd "$OUT" && "$PY" "$ROOT/benchmarks/check_install.py" --checkout "$ROOT" $gpu_flag) 2>&1 \
    | tee "$OUT/imports.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "install check (see above)"

step "collect every GPU test and GPU benchmark"
# GPU tests: every test whose name contains "cuda" (tests/test_gpu.py and the test_cuda_* of other
# files; the test_triton_* tests take CPU tensors under the interpreter and are not GPU tests).
# Each test function defined with "cuda" in its name must be collected, and collection must be clean.
collect() { "$PY" -m pytest "$@" --collect-only -q -p no:cacheprovider 2>&1 | grep '::'; }
gpu_tests=$(collect tests -k cuda) || fail "collecting the GPU tests"
gpu_benches=$(collect benchmarks -k "cuda or gelan_c or yolov9_c") || fail "collecting the GPU benchmarks"
n_tests=$(grep -c '::' <<< "$gpu_tests")
n_benches=$(grep -c '::' <<< "$gpu_benches")
defined=$(grep -ohE '^def (test_[A-Za-z0-9_]*cuda[A-Za-z0-9_]*)' tests/*.py | sed 's/^def //' | sort -u)
collected=$(sed -E 's/.*::([A-Za-z0-9_]+).*/\1/' <<< "$gpu_tests" | sort -u)
not_collected=$(comm -23 <(echo "$defined") <(echo "$collected"))
echo "GPU tests collected: $n_tests ($(wc -l <<< "$defined") functions defined, all collected)"
echo "GPU benchmarks collected: $n_benches"
[ -z "$not_collected" ] || fail "GPU tests defined but not collected: $not_collected"
[ "$n_tests" -gt 0 ] && [ "$n_benches" -gt 0 ] || fail "no GPU test or benchmark collected"
echo "$gpu_tests" > "$OUT/gpu_tests.txt"

status=0
tests_line="not run (dry run)"
if [ "$DRY" -eq 0 ]; then
    step "GPU parity tests ($n_tests)"
    timeout 200 "$PY" -m pytest tests -q -p no:cacheprovider -rs -k cuda 2>&1 | tee "$OUT/tests.log" | tail -25
    rc=${PIPESTATUS[0]}
    tests_line=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$OUT/tests.log" | tail -1)
    passed=$(grep -oE '[0-9]+ passed' <<< "$tests_line" | cut -d' ' -f1)
    # every GPU test must run here: a skip on the GPU machine is a failure of the check
    if [ "$rc" -ne 0 ] || [ "${passed:-0}" -ne "$n_tests" ]; then
        status=1; echo "GPU tests: ${passed:-0} of $n_tests passed (rc $rc)"
    fi
fi

step "benchmarks$([ "$DRY" -eq 1 ] && echo ' (quick mode, every case)')"
if [ "$DRY" -eq 1 ]; then
    YOLOV9K_BENCH_QUICK=1 timeout 600 "$PY" -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
        --benchmark-min-rounds=1 --benchmark-max-time=0.5 --benchmark-warmup=off \
        --benchmark-json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
else
    timeout 200 "$PY" -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
        -k "cuda or gelan_c or yolov9_c" --benchmark-max-time=0.5 \
        --benchmark-json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
fi
rc=$?
# 5 = nothing collected / all skipped: fine for benchmarks only
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || { tail -30 "$OUT/bench.log"; status=1; echo "benchmarks failed (rc $rc)"; }

# speed of light: floors of the full-size cases (dry run), or measured / floor of this run's cases
sol_args=()
[ "$DRY" -eq 1 ] || sol_args=(--bench "$OUT/bench.json")
if ! "$PY" benchmarks/speed_of_light.py "${sol_args[@]}" > "$OUT/speed_of_light.md" 2>&1; then
    tail -5 "$OUT/speed_of_light.md"; status=1; echo "speed of light failed"
fi

step "table"
verdict=$([ "$status" -eq 0 ] && echo OK || echo FAILED)$([ "$DRY" -eq 1 ] && echo ' (dry run)')
{
    echo "GPU CHECK $verdict · commit $commit · $(date -u +%Y-%m-%d) · $(paste -sd' ' "$OUT/device.txt")"
    echo "GPU tests: $tests_line (collected $n_tests) · GPU benchmarks collected: $n_benches"
    [ -s "$OUT/bench.json" ] && "$PY" benchmarks/summarize.py "$OUT/bench.json"
    echo
    cat "$OUT/speed_of_light.md"
} | tee "$OUT/table.md"
exit $status
