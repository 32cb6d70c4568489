#!/usr/bin/env bash
# One run of sparsekern on a CUDA machine (no network) that brings back every answer it can.
#
# Stages, in order, each in its own process under its own time limit (timeout: SIGINT, then
# SIGKILL 10 s later), each appending its output to $OUT/gpu_check.log and rewriting
# $OUT/summary.txt and $OUT/junit.xml when it ends. A failing or timed-out stage never stops
# the later ones (stages that need the compiled kernels are skipped when the build failed).
#   env         versions (nvidia-smi, nvcc, gcc, ninja, torch, triton, numpy, setuptools,
#               pytest, hypothesis); setuptools >= 64 and ninja checked, installed from
#               $WHEELS (default .whl) when missing there
#   build       python setup.py build_ext --inplace with SPARSEKERN_CUDA=1, TORCH_CUDA_ARCH_LIST
#               (default: the card's own, 9.0a on Hopper), nvcc --threads 0; fallback
#               pip install --no-build-isolation --no-deps --no-index -e .
#   probe       single-nonzero probe of the 2:4 mma.sp layout -> $OUT/probe.txt
#   cuda_tests  pytest tests/cuda -m gpu (no -x)                  -> junit.xml; a crash prints
#               its native frames, decoded with addr2line (bench/segv_bt.c, preloaded)
#   selftime    mma.sp vs cuBLAS vs torch 2:4 (the key figures)  -> $OUT/selftime.json
#   opprofile   torch.profiler of the public op path (sk.linear: 0.2 ms per call against a
#               0.02 ms kernel on the H200) -> $OUT/opprofile.txt
#   triton_tests pytest tests/triton -m gpu, autotune off         -> junit.xml
#   memcheck    compute-sanitizer memcheck, fp16 + bf16 2:4 (N up to 200, N = 40 included,
#               row-major and transposed B), CSC; PYTORCH_NO_CUDA_MEMORY_CACHING=1
#   racecheck   compute-sanitizer racecheck on the quick subset of the same cases (float16:
#               races do not depend on the dtype; 14 cases took ~180 s on an H200)
#   bench       python -m sparsekern.bench --device cuda --quick with the time left (SIGINT at
#               the limit: the bench writes what it measured) -> $OUT/gpu-<card>.{json,md},
#               copied to $RESULTS (default bench/results/: commit that copy)
# At most 8 files land in $OUT (the device tool returns 8): gpu_check.log, summary.txt,
# junit.xml, probe.txt, selftime.json, opprofile.txt, gpu-<card>.json, gpu-<card>.md.
#
# Knobs: OUT (default bench/results/gpu-check), RESULTS, PY (default python, else python3),
#   BUDGET_S (default 570: the whole run), WHEELS, TORCH_CUDA_ARCH_LIST, SKIP="stage ...",
#   BENCH_ARGS, BENCH_AUTOTUNE=1 (default off: the time goes to cases, not tuning),
#   CAP_<stage>=S overrides a stage's own limit,
#   DRY_RUN=1: no GPU needed: env runs, every other stage runs FAKE_<stage> (a bash command,
#   default `true`) instead: tests/cuda/test_gpu_check_script.py uses it.
# Exit status: 0 when every stage that ran passed, 1 otherwise.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

if [ -z "${PY:-}" ]; then
  if command -v python > /dev/null 2>&1; then PY=python; else PY=python3; fi
fi
OUT=${OUT:-bench/results/gpu-check}
RESULTS=${RESULTS:-$ROOT/bench/results}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_S:-570}))
LOG=$OUT/gpu_check.log
: > "$LOG"
: > "$WORK/stages.tsv"
FAILED=0
BUILD_OK=1
DRY=${DRY_RUN:-0}

CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -n 1)
[ "$DRY" = 1 ] && CARD=${FAKE_CARD:-dry-run}
CARD_SLUG=$(echo "${CARD:-unknown-gpu}" | tr 'A-Z' 'a-z' | sed -e 's/nvidia//' \
  -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
NAME="gpu-${CARD_SLUG:-unknown}"

left() { echo $((DEADLINE - $(date +%s))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# write_summary: summary.txt (stage table, then each stage's last result line) and junit.xml
# (one testcase per stage, then the pytest suites' own testcases).
write_summary() {
  {
    echo "sparsekern gpu_check on ${CARD:-?}: $(( $(date +%s) - START )) s of ${BUDGET_S:-570} s" \
         "($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    printf '%-13s %-28s %5s %5s  %s\n' stage status s limit result
    while IFS=$'\t' read -r n st dt lim detail; do
      printf '%-13s %-28s %5s %5s  %s\n' "$n" "$st" "$dt" "$lim" "$detail"
    done < "$WORK/stages.tsv"
    [ -s "$WORK/selftime.txt" ] && { echo; echo "selftime (ms):"; cat "$WORK/selftime.txt"; }
  } > "$OUT/summary.txt"
  "$PY" - "$WORK/stages.tsv" "$OUT/junit.xml" "$WORK"/pytest-*.xml > /dev/null 2>&1 <<'PYEOF' || true
import sys, xml.etree.ElementTree as ET
tsv, dest, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
root = ET.Element("testsuites", name="gpu_check")
suite = ET.SubElement(root, "testsuite", name="gpu_check.stages")
fails = skips = n = 0
for line in open(tsv):
    name, status, secs, limit, detail = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    n += 1
    case = ET.SubElement(suite, "testcase", classname="gpu_check", name=name, time=secs)
    if status.startswith("skipped"):
        skips += 1
        ET.SubElement(case, "skipped", message=status)
    elif status != "ok":
        fails += 1
        ET.SubElement(case, "failure", message=f"{status}: {detail}")
suite.set("tests", str(n)); suite.set("failures", str(fails)); suite.set("skipped", str(skips))
for path in extra:
    try:
        tree = ET.parse(path).getroot()
    except Exception:
        continue
    for s in ([tree] if tree.tag == "testsuite" else tree.findall("testsuite")):
        root.append(s)
ET.ElementTree(root).write(dest, encoding="utf-8", xml_declaration=True)
PYEOF
}

# result_line NAME: the line of a stage's log worth putting in the summary.
result_line() {
  local f=$WORK/$1.log
  grep -E "(passed|failed|error|no tests ran).* in [0-9.]+s|mismatches ->|ERROR SUMMARY|RACECHECK SUMMARY|^build: |^env: " "$f" 2> /dev/null \
    | tail -n 1 | cut -c1-110 | tr '\t' ' '
}

# stage NAME CAP RESERVE CMD...: run CMD with limit min(CAP, time left - RESERVE), RESERVE
# (the time kept for the later stages, sized for the default 570 s) scaled to BUDGET_S.
stage() {
  local name=$1 cap_var="CAP_$1" reserve=$(( $3 * ${BUDGET_S:-570} / 570 ))
  local cap=${!cap_var:-$2}; shift 3
  local limit; limit=$(min "$cap" $(( $(left) - reserve )))
  if [ "$limit" -lt "$(min 10 "$cap")" ] || [ "$limit" -lt 1 ]; then
    printf '%s\tskipped (no time left)\t0\t%s\t\n' "$name" "$limit" >> "$WORK/stages.tsv"
    write_summary; return 0
  fi
  local t0; t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  if [ "$DRY" = 1 ] && [ "$name" != env ]; then
    local var="FAKE_$name"
    set -- bash -c "${!var:-true}"
  fi
  timeout -s INT -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$? status
  cat "$WORK/$name.log" >> "$LOG"
  tail -n 8 "$WORK/$name.log"
  local dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT (rc $rc)"; FAILED=1 ;;
    130) status="INTERRUPTED (rc 130)"; FAILED=1 ;;
    *) status="FAILED (rc $rc)"; FAILED=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$limit" "$(result_line "$name")" \
    >> "$WORK/stages.tsv"
  write_summary
  return $rc
}

skip() {  # skip NAME WHY
  printf '%s\tskipped (%s)\t0\t0\t\n' "$1" "$2" >> "$WORK/stages.tsv"
  echo "== $1: skipped ($2)" | tee -a "$LOG"
  write_summary
}

wanted() { case " ${SKIP:-} " in *" $1 "*) skip "$1" "SKIP"; return 1 ;; esac; return 0; }

env_report() {
  echo "card: ${CARD:-none} ($(nvidia-smi --query-gpu=driver_version,memory.total,clocks.sm \
        --format=csv,noheader 2> /dev/null | head -n 1))"
  nvidia-smi 2>&1 | head -n 15
  echo "nvcc: $(nvcc --version 2>&1 | grep -o 'release [0-9.]*' || echo missing)"
  echo "gcc: $(gcc -dumpfullversion 2>&1 || echo missing)"
  echo "ninja: $(ninja --version 2>&1 || echo missing)"
  echo "compute-sanitizer: $(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null || echo missing)"
  "$PY" - <<'PYEOF'
import importlib
for name in ("torch", "triton", "numpy", "setuptools", "pytest", "hypothesis"):
    try:
        print(f"{name}: {importlib.import_module(name).__version__}")
    except Exception as e:
        print(f"{name}: missing ({type(e).__name__})")
import torch
print(f"torch.cuda: {torch.version.cuda}, available {torch.cuda.is_available()}",
      torch.cuda.get_device_capability() if torch.cuda.is_available() else "")
PYEOF
  # setuptools >= 64 (editable installs) and ninja (parallel builds): install carried wheels.
  if ! "$PY" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" \
      || ! command -v ninja > /dev/null 2>&1; then
    local wheels=${WHEELS:-$ROOT/.whl}
    if ls "$wheels"/*.whl > /dev/null 2>&1; then
      "$PY" -m pip install -q --no-index --no-deps "$wheels"/*.whl && echo "env: installed $wheels"
    else
      echo "env: setuptools < 64 or ninja missing and no wheels in $wheels; carry them:" \
           "pip download --no-deps --only-binary=:all: -d .whl 'setuptools>=64' ninja"
    fi
  fi
  echo "env: $("$PY" --version 2>&1), out $OUT"
}

default_arch() {  # the card's own compute capability, with the 'a' suffix on Hopper
  "$PY" -c "import torch; M, m = torch.cuda.get_device_capability(); print(f'{M}.{m}' + ('a' if M == 9 else ''))" \
    2> /dev/null || echo 9.0a
}

build() {
  export SPARSEKERN_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(default_arch)}
  echo "build: TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  if "$PY" setup.py build_ext --inplace; then echo "build: ok (setup.py build_ext --inplace)"; return 0; fi
  echo "build: setup.py build_ext failed; fallback: pip install -e"
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . \
    && echo "build: ok (pip install -e fallback)"
}

# A crash (SIGSEGV/SIGBUS) in a test stage prints its native frames (bench/segv_bt.c, preloaded
# into the test processes); symbolize turns the extension's frames into function and line
# while the build that made them is still there.
SEGV_SO=
if CC_BIN=$(command -v cc || command -v gcc) && \
    "$CC_BIN" -O1 -shared -fPIC -o "$WORK/segv_bt.so" bench/segv_bt.c -ldl > /dev/null 2>&1; then
  SEGV_SO=$WORK/segv_bt.so
fi
symbolize() {  # symbolize STAGE: append the decoded backtrace of a crash to the logs
  local f=$WORK/$1.log
  grep -q "=== segv_bt" "$f" 2> /dev/null || return 0
  {
    echo "== $1: native backtrace of the crash (addr2line)"
    grep -E '^#[0-9]+ /[^ ]+ \+0x[0-9a-f]+' "$f" | while read -r idx lib off sym; do
      echo "$idx $(basename "$lib") $off $sym $(addr2line -Cfpi -e "$lib" "${off#+}" 2> /dev/null | head -n 1)"
    done
  } | tee -a "$f" >> "$LOG"
}

export -f env_report default_arch build
export PY OUT ROOT CARD
SAN=$(command -v compute-sanitizer || true)
[ -z "$SAN" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SAN=/usr/local/cuda/bin/compute-sanitizer
[ "$DRY" = 1 ] && SAN=${SAN:-compute-sanitizer}
# --capture=sys: pytest captures fd 2 otherwise, and a crash handler's native frames (written to
# fd 2) would end in its capture file, lost with the process.
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -rfE -m gpu --capture=sys)
SELFTIME=("$PY" -m sparsekern.bench.cuda_selftime)

echo "sparsekern gpu_check on ${CARD:-?} -> $OUT (budget $((DEADLINE - START)) s, $PY)" | tee -a "$LOG"
wanted env && stage env 30 400 bash -c env_report
if wanted build; then stage build 240 300 bash -c build || BUILD_OK=0; fi
needs_build() {
  wanted "$1" || return 1
  if [ "$BUILD_OK" != 1 ]; then skip "$1" "build failed"; return 1; fi
}
if needs_build probe; then stage probe 45 280 "${SELFTIME[@]}" --probe "$OUT/probe.txt"; fi
if needs_build cuda_tests; then
  LD_PRELOAD=$SEGV_SO SPARSEKERN_CUDA_CHECK_STATUS=1 stage cuda_tests 120 220 "${PYTEST[@]}" \
    tests/cuda --junitxml="$WORK/pytest-cuda.xml"
  symbolize cuda_tests
fi
if needs_build selftime; then
  stage selftime 120 170 "${SELFTIME[@]}" --json "$OUT/selftime.json"
  # The table the selftime prints last (its header line onwards) goes into the summary.
  sed -n '/^layout /,$p' "$WORK/selftime.log" 2> /dev/null | tail -n 40 > "$WORK/selftime.txt"
  write_summary
fi
if needs_build opprofile; then
  stage opprofile 60 160 "${SELFTIME[@]}" --profile "$OUT/opprofile.txt"
fi
if wanted triton_tests; then
  LD_PRELOAD=$SEGV_SO SPARSEKERN_TRITON_AUTOTUNE=0 stage triton_tests 150 100 "${PYTEST[@]}" \
    tests/triton --junitxml="$WORK/pytest-triton.xml"
  symbolize triton_tests
fi
if [ -z "$SAN" ]; then
  skip memcheck "compute-sanitizer not found"; skip racecheck "compute-sanitizer not found"
else
  if needs_build memcheck; then
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 stage memcheck 90 60 "$SAN" --tool memcheck \
      --error-exitcode 9 "${SELFTIME[@]}" --sanitize
  fi
  if needs_build racecheck; then
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 stage racecheck 150 30 "$SAN" --tool racecheck \
      --error-exitcode 9 "${SELFTIME[@]}" --sanitize --quick
  fi
fi
if wanted bench; then
  SPARSEKERN_TRITON_AUTOTUNE=$([ "${BENCH_AUTOTUNE:-0}" = 1 ] && echo 1 || echo 0) \
    stage bench 100000 5 "$PY" -m sparsekern.bench --device cuda --quick --out "$OUT" \
    --name "$NAME" --no-progress --no-plots ${BENCH_ARGS:-}
  # An interrupted bench writes its JSON first; render the markdown if it got no further.
  if [ -f "$OUT/$NAME.json" ] && [ ! -f "$OUT/$NAME.md" ]; then
    "$PY" -m sparsekern.bench --render "$OUT/$NAME.json" > "$OUT/$NAME.md" 2>> "$LOG" \
      || rm -f "$OUT/$NAME.md"
  fi
  # The committed copy lives in $RESULTS (on the GPU machine: bring $OUT back first).
  if [ "$OUT" != "$RESULTS" ] && [ -f "$OUT/$NAME.json" ]; then
    mkdir -p "$RESULTS" && cp "$OUT/$NAME".json "$RESULTS/"
    [ -f "$OUT/$NAME.md" ] && cp "$OUT/$NAME".md "$RESULTS/"
  fi
fi

echo | tee -a "$LOG"
cat "$OUT/summary.txt" | tee -a "$LOG"
exit $FAILED
