. /work/venv/bin/activate
for round in 4 5; do
  for v in new old; do
    if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
    cd $R && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python -m sparsekern.bench --contention --phases 3 --calls 40 --out /tmp/ab4/$v-auto-$round --no-progress > /tmp/ab4/$v-auto-$round.log 2>&1
  done
done
echo done > /tmp/ab4/DONE5
