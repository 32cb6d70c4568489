#!/bin/bash
. /work/venv/bin/activate
export OPENBLAS_THREAD_TIMEOUT=4
cd /work/main
for p in own torch auto; do
  TAG="pool=$p" SPARSEKERN_CPU_POOL=$p PYTHONPATH=. python /tmp/exp/cont.py 4096 4096 64 3 30 "bsr32x32 90%" "csc 90%"
done
TAG="T=1" T=1 PYTHONPATH=. python /tmp/exp/cont.py 4096 4096 64 3 30 "bsr32x32 90%" "csc 90%"
