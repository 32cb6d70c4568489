# Old build (main before the change, a worktree at /tmp/ab-old with its own _C.abi3.so) and
# new build alternating, in separate processes; 2 threads; quiet machine.
D=bench/results/semi24-panel-fetch-2026-12-07
cd /work/main && . /work/venv/bin/activate
for r in 1 2 3; do
  for b in old new; do
    P=/work/main; [ $b = old ] && P=/tmp/ab-old
    for N in 16 64; do echo "$b avx512 N=$N r$r: $(PYTHONPATH=$P python $D/layers_in_turn.py $N | tr '\n' ' ')"; done
    echo "$b avx512 N=512 r$r: $(PYTHONPATH=$P python $D/layers_in_turn.py 512 20 | tr '\n' ' ')"
    echo "$b avx2 N=16 r$r: $(SPARSEKERN_CPU_ISA=avx2 PYTHONPATH=$P python $D/layers_in_turn.py 16 | tr '\n' ' ')"
    echo "$b minilm r$r: $(PYTHONPATH=$P python $D/minilm_compiled.py 2>/dev/null | tail -1)"
  done
done
