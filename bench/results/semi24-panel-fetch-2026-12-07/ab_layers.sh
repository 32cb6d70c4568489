# Needs the experiment build (not committed): SK_EXP_PF=0 switched the fetch off.
cd /work/main && . /work/venv/bin/activate
for r in 1 2 3; do
  for pf in 0 1; do
    for N in 16 64; do
      echo "pf=$pf N=$N round $r: $(SK_EXP_PF=$pf PYTHONPATH=. python bench/results/semi24-panel-fetch-2026-12-07/layers_in_turn.py $N | tr '\n' ' ')"
    done
  done
done
