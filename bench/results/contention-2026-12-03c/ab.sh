#!/bin/bash
. /work/venv/bin/activate
export OPENBLAS_THREAD_TIMEOUT=4
for i in 1 2; do
 for v in A B; do
  d=/work/main; [ $v = A ] && d=/tmp/vA
  (cd $d && TAG="$v" PYTHONPATH=. python /tmp/exp/cont.py 4096 4096 64 3 30 torch.F.linear 2:4 "bsr32x32 90%" "csc 90%")
 done
done
