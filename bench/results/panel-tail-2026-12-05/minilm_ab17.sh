. /work/venv/bin/activate
for r in 1 2 3; do
  for tree in old main; do
    (cd /work/$tree && TOKENS=17 env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python /tmp/minilm_tail.py 2>/dev/null | tail -1 | sed "s/^/quiet17 $tree /")
  done
done
