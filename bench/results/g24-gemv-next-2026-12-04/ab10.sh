. /work/venv/bin/activate
rm -f /tmp/ab10.jsonl
for round in 1 2; do for v in old new; do
  if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
  for nn in 2 8; do
  cd $R && NN=$nn SHAPES=4096x4096,3072x768 env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$R python /tmp/coldgemvn.py $v 2:4 >> /tmp/ab10.jsonl 2>>/tmp/ab10.err
  done
done; done; echo done >> /tmp/ab10.err
