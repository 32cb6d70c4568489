. /work/venv/bin/activate
for round in 1 2 3; do
  for v in old new; do
    if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
    for pool in auto; do
      cd $R && SPARSEKERN_CPU_POOL=$pool env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python -m sparsekern.bench --contention --phases 3 --calls 40 --out /tmp/ab3/$v-$pool-$round --no-progress > /tmp/ab3/$v-$pool-$round.log 2>&1
    done
  done
  cd /work/main && SPARSEKERN_CPU_POOL=own env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=/work/main python -m sparsekern.bench --contention --phases 3 --calls 40 --out /tmp/ab3/new-own-$round --no-progress > /tmp/ab3/new-own-$round.log 2>&1
done
echo done > /tmp/ab3/DONE
