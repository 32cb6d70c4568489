# A/B of the panel-tail split: BEFORE = a tree without it (main at 0659ad3), AFTER = this one.
# Each run: one process, 2:4 and CSC 90% at 17 tokens etc., medians of 5 x 300 calls (us);
# trees alternate, 3 rounds, at 1 thread (pinned to CPU 0) and 2 threads.
# Usage: BEFORE=/work/main AFTER=/work/wt2 bash ab.sh > ab.log
. /work/venv/bin/activate
here=$(cd "$(dirname "$0")" && pwd)
for r in 1 2 3; do
  for th in 1 2; do
    for tree in "$BEFORE" "$AFTER"; do
      pin=""; [ "$th" = 1 ] && pin="taskset -c 0"
      tag=$([ "$tree" = "$BEFORE" ] && echo before || echo after)
      (cd "$tree" && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. $pin \
         python "$here/t.py" "$th" 2>/dev/null | tail -1 | sed "s/^/$tag $th /")
    done
  done
done
