#!/usr/bin/env bash
# Sanitizer job for the CPU kernels: builds sparsekern._C with AddressSanitizer + UBSan
# (setup.py's SPARSEKERN_SANITIZE=1) in a throw-away copy of the sources, so the normal
# build in the working tree is never touched, then runs the CPU kernel tests against that
# build on both ISA paths with gcc's libasan preloaded into the (uninstrumented) Python.
# Fails on any sanitizer report or failing test.
#
# Needs: an active venv with torch, ninja and the test extras; gcc. Usage: bash .ci/sanitize.sh
# Env: SANITIZE_TESTS (default tests/backends/test_cpu_*.py tests/test_reliability*.py
# tests/formats/test_sell.py tests/test_attention.py),
# KEEP_SANITIZE_DIR=1 keeps the copy.
# UBSan's signed-integer-overflow check is only meaningful without -fwrapv (which Python's
# sysconfig flags carry): setup.py appends -fno-wrapv, and this job checks that it did.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sparsekern-sanitize.XXXXXX")
if [ "${KEEP_SANITIZE_DIR:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
SRC="$WORK/src"
mkdir -p "$SRC"

# The sources only: no compiled extension or build folder comes along.
paths=()
for p in setup.py pyproject.toml README.md LICENSE csrc sparsekern tests; do
  [ -e "$ROOT/$p" ] && paths+=("$p")
done
tar -C "$ROOT" --exclude='*.so' --exclude='__pycache__' --exclude='build' -cf - "${paths[@]}" \
  | tar -C "$SRC" -xf -

echo "=== sanitize: building sparsekern._C with ASan + UBSan in $SRC ==="
cd "$SRC"
if ! SPARSEKERN_SANITIZE=1 SPARSEKERN_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    python setup.py build_ext --inplace > "$WORK/build.log" 2>&1; then
  tail -60 "$WORK/build.log"
  echo "sanitize: build failed"; exit 1
fi
ls sparsekern/_C*.so > /dev/null
if ! grep -q -- "-fno-wrapv" "$WORK/build.log"; then
  echo "sanitize: the build did not pass -fno-wrapv (signed overflow would wrap unseen)"; exit 1
fi

LIBASAN=$(gcc -print-file-name=libasan.so)
LIBSTDCXX=$(gcc -print-file-name=libstdc++.so)
[ -e "$LIBASAN" ] || { echo "sanitize: gcc's libasan.so not found ($LIBASAN)"; exit 1; }

# Python's import must find this copy (cwd first on sys.path via -m), not the installed one.
# libstdc++ comes right after libasan: ASan must see the real __cxa_throw at start-up, and
# Python itself does not load libstdc++ (torch's C++ exceptions would abort otherwise).
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
# allocator_may_return_null: a huge request (the tests ask for some on purpose) returns null
# as it would without ASan, and torch turns it into an error, instead of ASan aborting.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=86:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"
python - <<'PY'
import os, sparsekern
from sparsekern import _extension
assert _extension._C is not None, _extension.unavailable_reason()
assert os.path.realpath(sparsekern.__file__).startswith(os.path.realpath(os.getcwd())), \
    f"imported {sparsekern.__file__}, not the sanitized copy"
print("sanitize: using", _extension._C.__file__)
PY

TESTS=${SANITIZE_TESTS:-tests/backends/test_cpu_*.py tests/test_reliability*.py tests/formats/test_sell.py tests/test_attention.py}
status=0
for isa in auto portable; do
  echo "=== sanitize: CPU kernel tests, SPARSEKERN_CPU_ISA=$isa ==="
  # shellcheck disable=SC2086
  if ! SPARSEKERN_CPU_ISA=$isa python -m pytest -q -p no:cacheprovider $TESTS \
      > "$WORK/test-$isa.log" 2>&1; then
    status=1
  fi
  tail -5 "$WORK/test-$isa.log"
  if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$WORK/test-$isa.log"; then
    grep -nE -A30 "ERROR: AddressSanitizer|runtime error:" "$WORK/test-$isa.log" | head -80
    echo "sanitize: sanitizer report (SPARSEKERN_CPU_ISA=$isa)"
    status=1
  elif [ $status -ne 0 ]; then
    tail -60 "$WORK/test-$isa.log"
  fi
  [ $status -eq 0 ] || break
done
[ $status -eq 0 ] && echo "sanitize: clean" || echo "sanitize: FAILED"
exit $status
