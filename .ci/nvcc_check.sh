#!/usr/bin/env bash
# Compile every torch-free CUDA kernel file (csrc/cuda/*.cu) with the machine's nvcc, to object
# files only, for sm_80 and sm_90a: proves the kernels (and their inline PTX: mma.sp, cp.async,
# ldmatrix) assemble for both targets without a GPU and without torch headers.
# Exits non-zero when nvcc is missing or any file fails; prints what it compiled and the
# compiler's register/spill report per kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-}
if [ -z "$NVCC" ]; then
  for cand in nvcc "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
    if command -v "$cand" > /dev/null 2>&1; then NVCC=$(command -v "$cand"); break; fi
  done
fi
[ -n "$NVCC" ] || { echo "nvcc_check: nvcc not found (set NVCC or CUDA_HOME)"; exit 1; }
echo "nvcc_check: $("$NVCC" --version | tail -n 2 | head -n 1) ($NVCC)"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ARCHS=(-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a)
FLAGS=(-c -O3 -std=c++17 --expt-relaxed-constexpr -Icsrc -Xptxas -v)

shopt -s nullglob
files=(csrc/cuda/*.cu)
[ ${#files[@]} -gt 0 ] || { echo "nvcc_check: no csrc/cuda/*.cu files"; exit 1; }
failed=0
for src in "${files[@]}"; do
  obj="$OUT/$(basename "$src" .cu).o"
  log="$OUT/$(basename "$src" .cu).log"
  if "$NVCC" "${FLAGS[@]}" "${ARCHS[@]}" "$src" -o "$obj" > "$log" 2>&1; then
    kernels=$(grep -c "Compiling entry function" "$log" || true)
    maxreg=$(grep -o "Used [0-9]* registers" "$log" | awk '{print $2}' | sort -n | tail -n 1)
    spills=$(grep -o "[0-9]* bytes spill stores" "$log" | awk '$1 > 0' | wc -l)
    echo "compiled $src -> $(basename "$obj") for sm_80 and sm_90a:" \
         "$kernels kernel entries, max ${maxreg:-0} registers, $spills with spills"
    grep -iE "warning" "$log" || true
  else
    echo "FAILED $src:"
    cat "$log"
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then echo "nvcc_check: failed"; exit 1; fi
echo "nvcc_check: ${#files[@]} files compiled"
