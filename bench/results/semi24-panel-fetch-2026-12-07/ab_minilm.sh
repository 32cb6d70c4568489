# Needs the experiment build (not committed): SK_EXP_PF=0 switched the fetch off.
cd /work/main && . /work/venv/bin/activate
for r in 1 2 3 4 5; do for pf in 0 1; do echo "pf=$pf r$r $(SK_EXP_PF=$pf PYTHONPATH=. python bench/results/semi24-panel-fetch-2026-12-07/minilm_compiled.py 2>/dev/null | tail -1)"; done; done
