. /work/venv/bin/activate
run() { rm -rf /tmp/repc; (cd $1 && SPARSEKERN_CACHE=/tmp/repc PYTHONPATH=. python bench/results/auto-busy-2026-12-07/rep2.py 2>&1 | grep -v "Warning\|latency table" | sed "s|^|$2 $3 |"); }
run /tmp/ab-old old quiet; run /work/main new quiet
timeout 900 taskset -c 1 sh -c 'while :; do :; done' & SP=$!; sleep 1
for i in 1 2 3; do run /tmp/ab-old old loaded$i; run /work/main new loaded$i; done
kill $SP; date
