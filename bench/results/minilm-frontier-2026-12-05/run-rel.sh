cd /work/main && . /work/venv/bin/activate
for cfg in "0.5 300 3e-4 1.0 0.05" "0.5 300 3e-4 0 0.05"; do
  TH=1 taskset -c 1 env PYTHONPATH=. python /tmp/rel.py $cfg >> /tmp/rel.log 2>&1
done
echo done >> /tmp/rel.log
