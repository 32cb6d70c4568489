#!/usr/bin/env bash
# One-shot check of sparsekern on a CUDA machine with no network (< 8 minutes).
#
# Needs: python (3.10+) with torch (CUDA), triton, pytest, pytest-benchmark; nvcc and ninja.
# Steps, each with its own time limit taken from one overall deadline:
#   1. build    pip install --no-build-isolation --no-deps -e .   (CUDA kernels compiled)
#   2. tests    pytest -m gpu tests/
#   3. bench    python -m sparsekern.bench --device cuda --quick  (sparsekern vs cuBLAS and
#               torch's semi-structured / BSR Triton / cuSPARSE peers; GPU kernel self-times)
#               -> $OUT/cuda-<card>-quick.{json,md,png}   ($OUT defaults to bench/results)
#   4. memcheck compute-sanitizer --tool memcheck on a tiny all-layout run (if the tool exists)
# Logs of every step go to $OUT/gpu_check-<step>.log. The last lines printed are a table of
# the steps and a short results table. Exit status: 0 when every step that ran passed.
#
# Knobs: OUT, PYTHON (default python), BUDGET_S (default 470), SKIP_BUILD=1, SKIP_TESTS=1,
#        SKIP_SANITIZER=1, BENCH_ARGS (extra arguments for the bench step).
set -u
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_S:-470}))
declare -a STEPS=()
FAILED=0

left() { echo $((DEADLINE - $(date +%s))); }

# run_step NAME LIMIT_S CMD...: runs CMD under `timeout`, logs to $OUT/gpu_check-NAME.log.
# SIGINT first (the bench writes what it measured on SIGINT), SIGKILL 15 s later.
run_step() {
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 10 ]; then
    STEPS+=("$name|skipped (no time left)|0"); return 0
  fi
  local t0=$(date +%s) rc
  echo "== $name (limit ${limit}s): $*"
  timeout -s INT -k 15 "$limit" "$@" > "$OUT/gpu_check-$name.log" 2>&1
  rc=$?
  tail -n 15 "$OUT/gpu_check-$name.log"
  local dt=$(( $(date +%s) - t0 )) status
  case $rc in
    0) status=ok ;;
    124|130|137) status="TIMEOUT after ${dt}s (rc $rc)"; FAILED=1 ;;
    *) status="FAILED (rc $rc)"; FAILED=1 ;;
  esac
  STEPS+=("$name|$status|$dt")
  return $rc
}

min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
CARD_SLUG=$(echo "${CARD:-unknown-gpu}" | tr 'A-Z' 'a-z' | sed -e 's/nvidia//' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
NAME="cuda-${CARD_SLUG}-quick"
echo "sparsekern gpu_check on ${CARD:-?} -> $OUT/$NAME.* (budget $((DEADLINE - START)) s)"
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "no CUDA device visible to torch"; exit 3; }

# 1. build (the CUDA kernels: SPARSEKERN_CUDA=1 fails loudly if nvcc is missing)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  MAX_JOBS=${MAX_JOBS:-$(nproc)} SPARSEKERN_CUDA=${SPARSEKERN_CUDA:-1} \
    run_step build "$(min 270 $(( $(left) - 200 )))" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .
fi

# 2. GPU tests
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  SPARSEKERN_CUDA_CHECK_STATUS=1 run_step tests "$(min 120 $(( $(left) - 110 )))" \
    "$PY" -m pytest -m gpu tests/ -q -x -p no:cacheprovider
fi

# 3. benchmark (quick matrix, peers, models, GPU kernel self-times)
run_step bench "$(( $(left) - 75 ))" \
  "$PY" -m sparsekern.bench --device cuda --quick --out "$OUT" --name "$NAME" --no-progress \
  ${BENCH_ARGS:-}

# 4. compute-sanitizer memcheck on a tiny run of every layout
SAN=$(command -v compute-sanitizer || true)
[ -z "$SAN" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ] && SAN=$CUDA_HOME/bin/compute-sanitizer
[ -z "$SAN" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SAN=/usr/local/cuda/bin/compute-sanitizer
if [ "${SKIP_SANITIZER:-0}" = 1 ]; then
  STEPS+=("memcheck|skipped (SKIP_SANITIZER=1)|0")
elif [ -n "$SAN" ]; then
  run_step memcheck "$(( $(left) - 15 ))" \
    "$SAN" --tool memcheck --error-exitcode 9 "$PY" -m sparsekern.bench.smoke --device cuda
else
  STEPS+=("memcheck|skipped (compute-sanitizer not found)|0")
fi

echo
echo "== gpu_check summary ($(( $(date +%s) - START )) s, ${CARD:-?})"
printf '%-9s %-36s %6s\n' step status seconds
for s in "${STEPS[@]}"; do
  IFS='|' read -r n st dt <<< "$s"
  printf '%-9s %-36s %6s\n' "$n" "$st" "$dt"
done
if [ -f "$OUT/$NAME.json" ]; then
  echo
  "$PY" -m sparsekern.bench --render "$OUT/$NAME.json" --short || FAILED=1
fi
exit $FAILED
