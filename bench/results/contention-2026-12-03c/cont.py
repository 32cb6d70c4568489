"""Contention experiment: one case, selected candidates, quiet/loaded phases.
usage: cont.py M K N phases calls [names...]"""
import os, sys, time, statistics, json
import torch
from sparsekern.bench import contention as C
M, K, N, phases, calls = map(int, sys.argv[1:6])
names = sys.argv[6:]
torch.set_num_threads(int(os.environ.get("T", "2")))
fns, _ = C.candidates(M, K, N, 0)
if names:
    fns = {n: f for n, f in fns.items() if n in names}
with C.BusyProcesses(C.default_busy_cores()) as busy, torch.inference_mode():
    C.run_phase(fns, 3)
    quiet = {n: [] for n in fns}; loaded = {n: [] for n in fns}
    for _ in range(phases):
        for state, acc in (("quiet", quiet), ("loaded", loaded)):
            (busy.resume if state == "loaded" else busy.pause)()
            time.sleep(0.2)
            for n, xs in C.run_phase(fns, calls).items():
                acc[n] += xs
    busy.pause()
tag = os.environ.get("TAG", "")
for n in fns:
    q, l = statistics.median(quiet[n]), statistics.median(loaded[n])
    print(f"{tag:>12} {M}x{K} N={N:<3} {n:>16}: quiet {q*1e3:7.3f} ms loaded {l*1e3:7.3f} ms  x{l/q:5.2f}", flush=True)
