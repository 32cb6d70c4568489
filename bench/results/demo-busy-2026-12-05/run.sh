. /work/venv/bin/activate
cd /tmp
s=$(date +%s)
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE SPARSEKERN_CACHE=/tmp/skc-q PYTHONPATH=/work/main timeout 900 python -m sparsekern demo --out /tmp/demo-q > /tmp/demo-q.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - s ))" >> /tmp/demo-q.log
taskset -c 1 python3 -c "while True: pass" &
SP=$!
s=$(date +%s)
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE SPARSEKERN_CACHE=/tmp/skc-l PYTHONPATH=/work/main timeout 900 python -m sparsekern demo --out /tmp/demo-l > /tmp/demo-l.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - s ))" >> /tmp/demo-l.log
kill $SP
ls /tmp/skc-l >> /tmp/demo-l.log 2>&1
echo done > /tmp/demo.done
