#!/usr/bin/env bash
# Builds the C++ CPU extension with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy
# and runs the native-op parity / fuzz tests against it. Usage: bash .ci/sanitize.sh [pytest args]
# Needs the project venv (.venv) with torch installed. Run by .ci/run (about 2 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z --cached --others --exclude-standard \
    | grep -z -E '^(setup.py|pyproject.toml|README.md|csrc/|yolov9k/|kernels/|tests/)' \
    | xargs -0 -I{} cp --parents {} "$work"
cd "$work"
if ! YOLOV9K_SANITIZE=1 "$PY" setup.py -q build_ext --inplace > build.log 2>&1; then
    tail -40 build.log; echo "sanitizer build FAILED"; exit 1
fi
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
# Python itself leaks by design: report errors only. UBSan findings abort the test.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:protect_shadow_gap=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
tests=${*:-tests/test_box_iou.py tests/test_nms.py tests/test_assign_kernels.py tests/test_bn_silu_cpp.py tests/test_hsv_jitter.py}
# shellcheck disable=SC2086
LD_PRELOAD="$libasan $libubsan" PYTHONPATH="$work" "$PY" -m pytest -q -p no:cacheprovider $tests
