. /work/venv/bin/activate
for load in quiet busy; do
  [ $load = busy ] && { timeout 200 sh -c 'while :; do :; done' & spin=$!; }
  for r in 1 2; do
    for tree in old main; do
      (cd /work/$tree && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python /tmp/minilm_tail.py 2>/dev/null | tail -1 | sed "s/^/$load $tree /")
    done
  done
  [ $load = busy ] && kill $spin 2>/dev/null
done
