. /work/venv/bin/activate
cd /tmp
rm -rf /tmp/skc-b /tmp/demo-b
taskset -c 1 python3 -c "while True: pass" &
SP=$!
s=$(date +%s)
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE SPARSEKERN_CACHE=/tmp/skc-b PYTHONPATH=/work/main timeout 900 python -m sparsekern demo --out /tmp/demo-b > /tmp/demo-b.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - s ))" >> /tmp/demo-b.log
kill $SP
ls /tmp/skc-b >> /tmp/demo-b.log 2>&1
echo done >> /tmp/demo-b.log
