. /work/venv/bin/activate
cd /tmp
rm -rf /tmp/skc-q5 /tmp/demo-q5
s=$(date +%s)
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE SPARSEKERN_CACHE=/tmp/skc-q5 PYTHONPATH=/work/main timeout 900 python -m sparsekern demo --out /tmp/demo-q5 > /tmp/demo-q5.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - s ))" >> /tmp/demo-q5.log
