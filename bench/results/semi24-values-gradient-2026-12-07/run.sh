. /work/venv/bin/activate
for r in 1 2 3; do
for shape in "1536 384 2048" "384 1536 2048" "384 1536 512" "1536 384 512" "4096 4096 512"; do
  for t in old new; do
    if [ $t = old ]; then d=/tmp/ab-old; f=sdab.py; else d=/work/main; f=.sdab.py; fi
    (cd $d && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python $f $shape | sed "s/^/$t r$r /")
  done
done; done
