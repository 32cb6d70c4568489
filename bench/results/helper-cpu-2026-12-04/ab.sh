. /work/venv/bin/activate
for round in 1 2; do
  for v in old new; do
    if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
    for pool in own auto; do
      cd $R && SPARSEKERN_CPU_POOL=$pool env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python -m sparsekern.bench --contention --phases 3 --calls 40 --out /tmp/ab/$v-$pool-$round --no-progress > /tmp/ab/$v-$pool-$round.log 2>&1
    done
  done
done
echo done > /tmp/ab/DONE
