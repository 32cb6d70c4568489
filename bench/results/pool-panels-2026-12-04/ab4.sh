. /work/venv/bin/activate
for round in 1 2 3; do
  for v in old new; do
    if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
    cd $R && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python /tmp/qab.py $v >> /tmp/ab4/quiet.jsonl 2>>/tmp/ab4/err.log
  done
done
for round in 1 2 3; do
  for v in old new; do
    if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
    cd $R && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python -m sparsekern.bench --contention --layout csc,2:4 --phases 3 --calls 40 --out /tmp/ab4/$v-auto-$round --no-progress > /tmp/ab4/$v-auto-$round.log 2>&1
  done
done
echo done > /tmp/ab4/DONE
