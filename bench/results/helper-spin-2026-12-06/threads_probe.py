import time, statistics as st, torch, sys
from sparsekern.bench import contention as C
torch.set_num_threads(2)
res = {}
with C.BusyProcesses(C.default_busy_cores()) as busy, torch.inference_mode():
    for (M, K) in [(2048, 2048), (4096, 4096)]:
        fns, _ = C.candidates(M, K, 1, 0)
        fns = {k: v for k, v in fns.items() if k != "numpy.matmul"}
        C.run_phase(fns, 3)
        acc = {}
        for r in range(4):
            for state, nt in [("quiet2", 2), ("loaded2", 2), ("loaded1", 1), ("quiet1", 1)]:
                (busy.resume if state.startswith("loaded") else busy.pause)()
                time.sleep(0.2)
                torch.set_num_threads(nt)
                for n, xs in C.run_phase(fns, 60).items():
                    acc.setdefault((n, state), []).extend(xs)
                torch.set_num_threads(2)
        busy.pause()
        for n in fns:
            q = st.median(acc[(n, "quiet2")])
            row = " ".join(f"{s}={st.median(acc[(n, s)])*1e3:.3f}ms({st.median(acc[(n, s)])/q:.2f}x,max{max(acc[(n,s)])*1e3:.1f})" for s in ["quiet2", "loaded2", "loaded1", "quiet1"])
            print(f"{M} {n:16s} {row}", flush=True)
