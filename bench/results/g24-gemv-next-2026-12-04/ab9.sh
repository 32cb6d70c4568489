. /work/venv/bin/activate
rm -f /tmp/ab9.jsonl; cp /tmp/ab9.jsonl /tmp/ab9-first.jsonl 2>/dev/null
for round in 1 2; do for v in old new; do
  if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
  cd $R && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python /tmp/coldgemv.py $v 2:4,1:4 >> /tmp/ab9.jsonl 2>>/tmp/ab9.err
done; done; echo done >> /tmp/ab9.err
