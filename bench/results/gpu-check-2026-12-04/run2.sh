#!/bin/bash
# Second GPU run: rebuild with the cp.async tail fix, locate the segfault, memcheck, tests.
# (The seg.py and segv_bt.so it names: .devtools/ was a scratch folder; the shim is bench/segv_bt.c.
# The segv step failed: seg.py lacked the repository on sys.path.)
cd "$(dirname "$0")/.."
T0=$(date +%s); left() { echo $(( ${BUDGET:-320} - ($(date +%s) - T0) )); }
export PYTHONUNBUFFERED=1 SPARSEKERN_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16
echo "== build"; timeout 150 python3 setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; echo BUILD FAILED; exit 1; }
echo "build ok at $(( $(date +%s) - T0 )) s"
echo "== segv"
for w in a b; do LD_PRELOAD=$PWD/.devtools/segv_bt.so timeout 40 python3 .devtools/seg.py $w > $OUT/seg_$w.log 2>&1; echo "seg $w rc=$?"; grep -v "^ *$" $OUT/seg_$w.log | grep -E "calling|raised|done|segv_bt|_C.abi3|libtorch|libc10" | head -30; done
for f in $OUT/seg_*.log; do grep "_C.abi3.so +0x" $f | head -12 | while read -r _ lib off _; do echo "$off $(addr2line -Cfpi -e sparsekern/_C.abi3.so $off 2>/dev/null | head -2 | tr '\n' ' ')"; done; done
echo "== memcheck (left $(left) s)"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -s INT 100 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m sparsekern.bench.cuda_selftime --sanitize > $OUT/memcheck.log 2>&1; echo "memcheck rc=$?"
grep -E "ERROR SUMMARY|Invalid|^ok|^FAIL|mismatch" $OUT/memcheck.log | sort | uniq -c | head -20
echo "== cuda tests (left $(left) s)"
L=$(left); [ $L -gt 100 ] && L=100
SPARSEKERN_CUDA_CHECK_STATUS=1 timeout -s INT $((L - 5)) python3 -m pytest -q -p no:cacheprovider -rfE -m gpu tests/cuda -p no:randomly --deselect tests/cuda/test_cuda_backend.py::test_private_op_rejects_bad_shapes_with_their_sizes > $OUT/cuda_tests.log 2>&1; echo "tests rc=$?"
grep -E "passed|failed|FAILED|ERROR|Error" $OUT/cuda_tests.log | tail -15
L=$(left)
if [ $L -gt 25 ]; then echo "== racecheck ($L s)"; PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -s INT $((L - 10)) compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m sparsekern.bench.cuda_selftime --sanitize --quick > $OUT/racecheck.log 2>&1; echo "racecheck rc=$?"; grep -E "SUMMARY|hazard|^ok|^FAIL" $OUT/racecheck.log | sort | uniq -c | head; fi
echo "total $(( $(date +%s) - T0 )) s"
