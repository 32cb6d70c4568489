cd /work/main && . /work/venv/bin/activate
for cfg in "0.7 300 1e-4" "0.8 300 1e-4" "0.7 300 3e-4"; do
  PYTHONPATH=. python /tmp/frontier.py $cfg >> /tmp/frontier.log 2>&1
done
echo done >> /tmp/frontier.log
