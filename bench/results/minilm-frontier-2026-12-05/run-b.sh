cd /work/main && . /work/venv/bin/activate
for cfg in "0.5 300 3e-4" "0.6 300 3e-4"; do
  TH=1 taskset -c 1 env PYTHONPATH=. python /tmp/frontier.py $cfg >> /tmp/frontier.log 2>&1
done
echo done2 >> /tmp/frontier.log
