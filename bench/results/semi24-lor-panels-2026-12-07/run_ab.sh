# The A/B of this folder: one experiment build of semi24.cpp whose dispatch read a getenv
# switch SK_EXP_LOR_PANELS (the largest N for lor_panels_avx512; 0 = the packed panels as
# committed at 296316f, unchanged code), alternating processes, 2 threads, AMD Zen 5 VM.
# The committed build has no switch (the rule: every N > 64 with a column-major B).
cd "$(dirname "$0")/../semi24-lanes-over-rows-2026-12-07"; . /work/venv/bin/activate
for r in 1 2 3; do for e in 0 100000; do
  echo "round=$r exp=$e"; SK_EXP_LOR_PANELS=$e PYTHONPATH=/work/main python layers.py 2 65,96,128,192,256,384,512 float32
done; done > ../semi24-lor-panels-2026-12-07/minilm-65-512.txt
for r in 1 2; do for e in 0 100000; do
  echo "round=$r exp=$e"; SK_EXP_LOR_PANELS=$e PYTHONPATH=/work/main python layers.py 2 1024,2048 float32
done; done > ../semi24-lor-panels-2026-12-07/minilm-1024-2048.txt
for r in 1 2; do for e in 0 100000; do
  echo "round=$r exp=$e"; SK_EXP_LOR_PANELS=$e PYTHONPATH=/work/main python big.py 96,128,256,512
done; done > ../semi24-lor-panels-2026-12-07/big-96-512.txt
