# Quick GEMV contention probe: quiet vs one pinned spinner on the last CPU, alternating phases.
import os, sys, time, statistics, subprocess, torch
sys.path.insert(0, os.environ.get("ROOT", "/work/main"))
from sparsekern.bench.contention import candidates
torch.set_num_threads(2)
N = int(os.environ.get("NN", "1")); calls = int(os.environ.get("CALLS", "60"))
cases = {}
for M in (2048, 4096):
    fns, _ = candidates(M, M, N, 0)
    for n in (("torch.F.linear",) if os.environ.get("NODENSE") is None else ()) + ("2:4", "bsr32x32 90%", "csc 90%"):
        cases[f"{M} {n}"] = fns[n]
def phase():
    out = {k: [] for k in cases}
    for _ in range(calls):
        for k, f in cases.items():
            t0 = time.perf_counter(); f(); out[k].append(time.perf_counter() - t0)
    return out
for f in cases.values(): f()
q = {k: [] for k in cases}; l = {k: [] for k in cases}
for rep in range(int(os.environ.get("REPS", "2"))):
    r = phase(); [q[k].extend(v) for k, v in r.items()]
    sp = subprocess.Popen(["taskset", "-c", "1", "python3", "-c", "while True: pass"])
    time.sleep(0.3)
    torch.set_num_threads(int(os.environ.get("TL", "2"))); r = phase(); [l[k].extend(v) for k, v in r.items()]; torch.set_num_threads(2)
    sp.kill(); sp.wait(); time.sleep(0.2)
def pct(v, p): v = sorted(v); return v[int(p * (len(v) - 1))]
for k in cases:
    mq, ml = statistics.median(q[k]), statistics.median(l[k])
    print(f"{k:22s} quiet {mq*1e3:7.3f} ms  loaded {ml*1e3:7.3f} (p90 {pct(l[k],.9)*1e3:6.2f})  ratio {ml/mq:5.2f}")
