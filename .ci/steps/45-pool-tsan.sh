# The kernels' own thread pool under ThreadSanitizer: tests/native/pool_stress.cpp, with and
# without random sleeps at call hand-over points; fails on a race report or an item that
# ran other than once.
set -euo pipefail
OUT=$(mktemp -d "${TMPDIR:-/tmp}/sparsekern-pool-tsan.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
g++ -std=c++17 -O1 -g -fsanitize=thread -Icsrc/cpu tests/native/pool_stress.cpp \
  csrc/cpu/parallel.cpp csrc/cpu/isa.cpp -o "$OUT/pool_stress" -lpthread
export TSAN_OPTIONS="halt_on_error=1:exitcode=66"
timeout 600 "$OUT/pool_stress" 20000
timeout 600 "$OUT/pool_stress" 3000 fuzz
