#!/usr/bin/env bash
# Second GPU session, call 2: locate the SIGSEGV of test_private_op_rejects_bad_shapes_with_their_sizes
# (bisect in subprocesses, gdb/shim backtrace), then the op path after the one-compare-per-call
# cache (opprofile + selftime), then the GPU tests (the crashing one deselected so the rest run).
set -u
cd "$(dirname "$0")/../../.." || exit 2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/run2.log; : > "$LOG"
PY=${PY:-python3}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
export SPARSEKERN_CUDA=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0a
el build; timeout 150 $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1; el "build rc=$?"
tail -3 "$OUT/build.log" >> "$LOG"
# crash handler: any compiler there is
SEGV=
for c in cc gcc g++ /opt/gcc/bin/gcc /opt/gcc/bin/g++; do
  if command -v "$c" > /dev/null 2>&1 && "$c" -O1 -shared -fPIC -o /tmp/segv_bt.so bench/segv_bt.c -ldl > /dev/null 2>&1; then SEGV=/tmp/segv_bt.so; el "shim built with $c"; break; fi
done
command -v gdb > /dev/null && el "gdb: $(command -v gdb)" || el "no gdb"
PRE='import torch, sparsekern; D="cuda"; f16=torch.float16
B=torch.randn(8,2,device=D,dtype=f16); out=torch.empty(4,2,device=D,dtype=f16); op=torch.ops.sparsekern._spmm_cuda
def tryit(fn):
    try: fn(); print("NO ERROR")
    except Exception as e: print("raised", type(e).__name__, str(e).splitlines()[0][:300])
'
declare -A V
V[v1_24_values_2d]='tryit(lambda: op(torch.zeros(3,4,device=D,dtype=f16), torch.zeros(1,1,16,device=D,dtype=torch.int32), torch.empty(0,device=D), 4, 8, "2:4", B, None, out))'
V[v2_24_bad_meta]='tryit(lambda: op(torch.zeros(1,1,32,8,device=D,dtype=f16), torch.zeros(1,1,3,device=D,dtype=torch.int32), torch.empty(0,device=D), 4, 8, "2:4", B, None, out))'
V[v3_bogus_layout]='tryit(lambda: op(torch.zeros(3,4,device=D,dtype=f16), torch.zeros(1,device=D), torch.zeros(1,device=D), 4, 8, "bogus", B, None, out))'
V[v4_csc_bad_B]='tryit(lambda: op(torch.zeros(1,device=D), torch.zeros(1,device=D), torch.zeros(1,device=D), 4, 9, "csc", B, None, out))'
V[v5_bad_out_shape]='tryit(lambda: op(torch.zeros(3,4,device=D,dtype=f16), torch.zeros(1,device=D), torch.zeros(1,device=D), 5, 8, "2:4", B, None, out))'
V[v6_24_values_2d_int_offsets]='tryit(lambda: op(torch.zeros(3,4,device=D,dtype=f16), torch.zeros(1,1,16,device=D,dtype=torch.int32), torch.empty(0,device=D,dtype=torch.int32), 4, 8, "2:4", B, None, out))'
V[v7_csc_bad_rows_dtype]='tryit(lambda: op(torch.zeros(1,device=D,dtype=f16), torch.zeros(1,device=D), torch.zeros(1,2,device=D,dtype=torch.int32), 4, 8, "csc", B, None, out))'
for k in $(echo "${!V[@]}" | tr ' ' '\n' | sort); do
  r=$(LD_PRELOAD=$SEGV timeout 60 $PY -X faulthandler -c "$PRE${V[$k]}" 2>&1 | tail -40); rc=$?
  { echo "--- $k"; echo "$r" | grep -v "^  File \"/opt" | tail -25; } >> "$LOG"
  el "$k: $(echo "$r" | grep -E "raised|NO ERROR|Segmentation|segv_bt" | head -2 | tr '\n' ' ')"
done
if command -v gdb > /dev/null; then
  el "gdb on v1"; timeout 90 gdb -q -batch -ex run -ex bt -ex "info sharedlibrary sparsekern" --args $PY -c "$PRE${V[v1_24_values_2d]}" > "$OUT/gdb.txt" 2>&1
  grep -E "^#|SIGSEGV|signal" "$OUT/gdb.txt" | head -40 >> "$LOG"
fi
el opprofile; timeout 60 $PY -m sparsekern.bench.cuda_selftime --profile "$OUT/opprofile.txt" > /dev/null 2>&1; el "opprofile rc=$?"
grep -E "^== " "$OUT/opprofile.txt" >> "$LOG"
el selftime; timeout 90 $PY -m sparsekern.bench.cuda_selftime --json "$OUT/selftime.json" > "$OUT/selftime.txt" 2>&1; el "selftime rc=$?"
cat "$OUT/selftime.txt" | grep -vi warn | tail -22 >> "$LOG"
el cuda_tests; LD_PRELOAD=$SEGV SPARSEKERN_CUDA_CHECK_STATUS=1 timeout 100 $PY -m pytest -q -p no:cacheprovider -rfE -m gpu tests/cuda \
  --deselect tests/cuda/test_cuda_backend.py::test_private_op_rejects_bad_shapes_with_their_sizes > "$OUT/cuda_tests.txt" 2>&1; el "cuda_tests rc=$?"
tail -15 "$OUT/cuda_tests.txt" >> "$LOG"
left=$(( ${BUDGET_S:-330} - ($(date +%s) - T0) - 10 ))
if [ "$left" -gt 30 ]; then
  el "triton_tests (limit $left s)"; SPARSEKERN_TRITON_AUTOTUNE=0 timeout $left $PY -m pytest -q -p no:cacheprovider -rfE -m gpu tests/triton > "$OUT/triton_tests.txt" 2>&1; el "triton_tests rc=$?"
  tail -8 "$OUT/triton_tests.txt" >> "$LOG"
fi
el done
