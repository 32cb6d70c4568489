# Before (a worktree of 354fcb7 built in /tmp/wt-old) and after (/work/main), alternating processes.
# model_ab.py: ../e2e-peers-2026-12-07-zen5c/freeze_ab.py with model_ab.patch applied
# (patch -o model_ab.py ../e2e-peers-2026-12-07-zen5c/freeze_ab.py model_ab.patch).
cd "$(dirname "$0")"; . /work/venv/bin/activate
out=/tmp/ab_final.txt; : > $out
for r in 1 2 3; do for d in /tmp/wt-old /work/main; do
  for dt in float32 bfloat16; do echo "round=$r build=$d dtype=$dt" >> $out; PYTHONPATH=$d python layers.py 2 9,12,16,17,24,32,48,64 $dt >> $out 2>&1; done
done; done
for r in 1 2 3 4; do for d in /tmp/wt-old /work/main; do for tk in 16 17; do
  TOKENS=$tk PYTHONPATH=$d python model_ab.py plain 2>&1 | tail -1 >> $out
done; done; done
echo done >> $out
