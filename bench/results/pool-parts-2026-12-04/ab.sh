. /work/venv/bin/activate
for round in 1 2 3; do
  for v in new old; do
    if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
    cd $R && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python -m sparsekern.bench --contention --phases 3 --calls 40 --out RUNS/$v-auto-$round --no-progress > RUNS/$v-auto-$round.log 2>&1
    cd $R && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python /work/main/bench/results/pool-panels-2026-12-04/qab.py $v >> quiet.jsonl 2>>/tmp/ab6p/qerr.log
  done
done
echo done > /tmp/ab6p/DONE
