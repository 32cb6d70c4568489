. /work/venv/bin/activate
cd /tmp
rm -rf /tmp/skc-q2 /tmp/demo-q2
s=$(date +%s)
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE SPARSEKERN_CACHE=/tmp/skc-q2 PYTHONPATH=/work/main timeout 900 python -m sparsekern demo --out /tmp/demo-q2 > /tmp/demo-q2.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - s ))" >> /tmp/demo-q2.log
