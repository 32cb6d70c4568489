import os, time, statistics as st, torch, sys
from sparsekern.bench import contention as C
torch.set_num_threads(2)
settings = sys.argv[1].split(",")  # spin values
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
shapes = [((2048, 2048), 1), ((4096, 4096), 1), ((2048, 2048), 64)]
def stats(xs, q):
    xs = sorted(xs); n = len(xs)
    return st.median(xs)/q, xs[int(0.9*n)]/q, sum(x > 1e-3 + 3*q for x in xs)
with C.BusyProcesses(C.default_busy_cores()) as busy, torch.inference_mode():
    for (M, K), N in shapes:
        fns, _ = C.candidates(M, K, N, 0)
        fns = {k: v for k, v in fns.items() if k not in ("numpy.matmul", "torch.F.linear")}
        C.run_phase(fns, 3)
        acc = {}
        for r in range(rounds):
            for sp in (settings if r % 2 == 0 else settings[::-1]):
                os.environ["SK_EXP_SPIN"] = sp
                for state in ("quiet", "loaded"):
                    (busy.resume if state == "loaded" else busy.pause)()
                    time.sleep(0.15)
                    for n, xs in C.run_phase(fns, 50).items():
                        acc.setdefault((n, sp, state), []).extend(xs)
        busy.pause()
        for n in fns:
            q = st.median(acc[(n, settings[0], "quiet")])
            parts = []
            for sp in settings:
                qm = st.median(acc[(n, sp, "quiet")]) / q
                m, p90, stalls = stats(acc[(n, sp, "loaded")], q)
                parts.append(f"spin={sp}: quiet {qm:.2f} loaded med {m:.2f} p90 {p90:.2f} stalls {stalls}")
            print(f"{M} N={N} {n:14s} q={q*1e3:.3f}ms | " + " | ".join(parts), flush=True)
