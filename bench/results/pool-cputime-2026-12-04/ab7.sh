. /work/venv/bin/activate
rm -f /tmp/small.jsonl
for round in 1 2 3 4; do for v in old new; do
  if [ $v = old ]; then R=/tmp/vOld; else R=/work/main; fi
  cd $R && PYTHONPATH=$R python /tmp/small.py $v >> /tmp/small.jsonl 2>>/tmp/small.err
done; done; echo done >> /tmp/small.err
