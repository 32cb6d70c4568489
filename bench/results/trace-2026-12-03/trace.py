"""Per-call traces of the contention cases (issue 13): which calls are slow under load, and when.

    python trace.py POOL SHAPE N [--phases 3] [--calls 40]     (POOL: auto | own | torch)

Runs in a fresh process per pool (SPARSEKERN_CPU_POOL is read by the extension). One busy
process pinned to the last core, stopped in quiet phases and running in loaded ones, as
`python -m sparsekern.bench --contention`; the candidates are called in turns exactly as there
(dense torch, dense NumPy, 2:4, BSR, CSC). Prints one JSON line: per candidate, per phase, the
call times (ms) and their start times (s from the run's start).
"""
import json, os, sys, time
pool, shape, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
phases = int(sys.argv[sys.argv.index("--phases") + 1]) if "--phases" in sys.argv else 3
calls = int(sys.argv[sys.argv.index("--calls") + 1]) if "--calls" in sys.argv else 40
os.environ["SPARSEKERN_CPU_POOL"] = pool
import torch
torch.set_num_threads(2)
from sparsekern.bench import contention as C
fns, _ = C.candidates(shape, shape, N, 0)
for fn in fns.values():
    fn(); fn()
t_start = time.perf_counter()
out = []
with C.BusyProcesses(C.default_busy_cores()) as busy:
    for ph in range(phases):
        for loaded in (False, True):
            (busy.resume if loaded else busy.pause)()
            time.sleep(0.2)
            rec = {n: {"start": [], "ms": []} for n in fns}
            for _ in range(calls):
                for n, fn in fns.items():
                    t0 = time.perf_counter(); fn(); t1 = time.perf_counter()
                    rec[n]["start"].append(round(t0 - t_start, 4)); rec[n]["ms"].append(round((t1 - t0) * 1e3, 4))
            out.append({"phase": ph, "loaded": loaded, "calls": rec})
print(json.dumps({"pool": pool, "shape": shape, "N": N, "phases": out}))
