#!/usr/bin/env bash
# Call 3: the libstdc++ fix. Rebuild; does _C still define std::ostream code (a static libstdc++
# copy)? Which libstdc++ is NEEDED? Then the test that crashed, the error variants, tests/cuda.
set -u
cd "$(dirname "$0")/../../.." || exit 2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/run3.log; : > "$LOG"
PY=${PY:-python3}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
export SPARSEKERN_CUDA=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0a
el "CXX=${CXX:-unset} c++=$(command -v c++) g++=$(command -v g++)"
$PY -c "import setup, torch; print('libstdcxx_link_args:', setup.libstdcxx_link_args())" >> "$LOG" 2>&1
el build; timeout 150 $PY setup.py build_ext --inplace > "$OUT/build3.log" 2>&1; el "build rc=$?"
grep -E "^/opt/gcc/bin/g\+\+ .*-shared|^g\+\+ .*-shared|^c\+\+ .*-shared" "$OUT/build3.log" | tail -1 | tr ' ' '\n' | grep -E "libstdc|^-l|g\+\+$" | tr '\n' ' ' >> "$LOG"; echo >> "$LOG"
SO=$(ls sparsekern/_C*.so | head -1)
el "ostream symbols defined in _C: $(nm -D --defined-only "$SO" | grep -c '_ZNSo')"
el "NEEDED: $(readelf -d "$SO" 2>/dev/null | grep NEEDED | sed 's/.*\[\(.*\)\]/\1/' | tr '\n' ' ')"
PRE='import torch, sparsekern; D="cuda"; f16=torch.float16
B=torch.randn(8,2,device=D,dtype=f16); out=torch.empty(4,2,device=D,dtype=f16); op=torch.ops.sparsekern._spmm_cuda
try:
    op(torch.zeros(3,4,device=D,dtype=f16), torch.zeros(1,1,16,device=D,dtype=torch.int32), torch.empty(0,device=D), 4, 8, "2:4", B, None, out); print("NO ERROR")
except Exception as e: print("raised", type(e).__name__, str(e).splitlines()[0][:200])
'
el "v1: $(timeout 60 $PY -c "$PRE" 2>&1 | tail -1)"
el cuda_tests; SPARSEKERN_CUDA_CHECK_STATUS=1 timeout 100 $PY -m pytest -q -p no:cacheprovider -rfE -m gpu tests/cuda > "$OUT/cuda_tests3.txt" 2>&1; el "cuda_tests rc=$?"
tail -4 "$OUT/cuda_tests3.txt" >> "$LOG"
timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_setup_libstdcxx.py >> "$LOG" 2>&1; el "setup tests rc=$?"
el done
