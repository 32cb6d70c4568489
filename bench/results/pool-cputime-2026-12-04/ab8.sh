. /work/venv/bin/activate
rm -f /tmp/small8.jsonl
for round in 1 2 3; do for v in old new-auto new-torch new-own; do
  if [ $v = old ]; then R=/tmp/vOld; P=auto; else R=/work/main; P=${v#new-}; fi
  cd $R && SHAPES=2048x2048 SPARSEKERN_CPU_POOL=$P PYTHONPATH=$R python /tmp/small.py $v >> /tmp/small8.jsonl 2>>/tmp/small8.err
done; done; echo done >> /tmp/small8.err
