"""csc 90% 4096² N=1 per-call times, quiet vs one busy process pinned to CPU 1, 2 threads."""
import os, subprocess, time, statistics as st, torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(2)
W = torch.randn(4096, 4096) * (torch.rand(4096, 4096) < 0.1)
lin = torch.nn.Linear(4096, 4096); lin.weight.data = W
s = sk.SparseLinear.from_dense(lin, layout=os.environ.get("LAY", "csc"))
x = torch.randn(1, 4096)
def phase(n=300):
    ts = []
    with torch.inference_mode():
        for _ in range(n):
            a = time.perf_counter(); s(x); ts.append(time.perf_counter() - a)
    ts.sort()
    return st.median(ts) * 1e3, ts[int(0.9 * n)] * 1e3, ts[-1] * 1e3
for rep in range(3):
    q = phase()
    busy = subprocess.Popen(["taskset", "-c", "1", "python3", "-c", "while True: pass"])
    time.sleep(0.3)
    l = phase()
    busy.kill(); busy.wait(); time.sleep(0.3)
    print(f"{os.environ.get('SPARSEKERN_CPU_POOL','auto')} quiet med/p90/max {q[0]:.3f}/{q[1]:.3f}/{q[2]:.2f} ms, loaded {l[0]:.3f}/{l[1]:.3f}/{l[2]:.2f} ms: x{l[0]/q[0]:.2f}", flush=True)
