# Cold GEMV (N=1): rotate through enough layers that each call's weights come from DRAM.
# python coldgemv.py TAG -> json lines {tag, case, ms (median), GBps}
import json, sys, time, statistics, os
import numpy as np, torch
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(2)
tag = sys.argv[1]
shapes = [tuple(map(int, t.split("x"))) for t in os.environ.get("SHAPES", "4096x4096,3072x768,768x3072").split(",")]
layouts = sys.argv[2].split(",") if len(sys.argv) > 2 else ["2:4", "csc90", "csc95"]
LLC = 3 * 32 << 20  # rotate past ~3x a 32 MB LLC
def run(fns, nbytes, reps=40):
    ts = []
    k = 0
    for _ in range(3 * len(fns)): fns[k % len(fns)](); k += 1
    for _ in range(reps):
        t = time.perf_counter(); fns[k % len(fns)](); ts.append(time.perf_counter() - t); k += 1
    med = statistics.median(ts)
    return med * 1e3, nbytes / med / 1e9
g = torch.Generator().manual_seed(0)
for (M, K) in shapes:
    dense_bytes = M * K * 4
    L = max(2, -(-LLC // (M * K * 4 // 20)))  # enough for the smallest (CSC 95%)
    Ws = [torch.randn(M, K, generator=g) for _ in range(L)]
    NN = int(os.environ.get("NN", "1")); x = torch.randn(NN, K, generator=g); xn = x.numpy()
    Wn = [w.numpy().T.copy().T for w in Ws]  # [K,M] view of a row-major [M,K]: x @ W.T
    ms, gbs = run([lambda w=w: xn @ w.T for w in Wn], dense_bytes)
    print(json.dumps({"tag": tag, "case": f"{M}x{K}/N{NN} dense-numpy", "ms": ms, "GBps": gbs}), flush=True)
    ms, gbs = run([lambda w=Wn[0]: xn @ w.T], dense_bytes, reps=100)
    print(json.dumps({"tag": tag, "case": f"{M}x{K}/N{NN} dense-numpy warm", "ms": ms, "GBps": gbs}), flush=True)
    ms, gbs = run([lambda w=w: torch.nn.functional.linear(x, w) for w in Ws], dense_bytes)
    print(json.dumps({"tag": tag, "case": f"{M}x{K}/N{NN} dense-torch", "ms": ms, "GBps": gbs}), flush=True)
    for lay in layouts:
        layout, sp = {"2:4": ("2:4", 0.5), "csc90": ("csc", 0.9), "csc95": ("csc", 0.95), "1:4": ("1:4", 0.75)}[lay]
        As = [to_sparse(magnitude.prune(w, layout, sp, None), layout=layout) for w in Ws]
        nb = sum(t.numel() * t.element_size() for t in As[0].op_args() if isinstance(t, torch.Tensor))
        ms, gbs = run([lambda A=A: linear(x, A) for A in As], nb)
        print(json.dumps({"tag": tag, "case": f"{M}x{K}/N{NN} {lay}", "ms": ms, "GBps": gbs, "bytes": nb}), flush=True)
        ms, gbs = run([lambda A=As[0]: linear(x, A)], nb, reps=100)
        print(json.dumps({"tag": tag, "case": f"{M}x{K}/N{NN} {lay} warm", "ms": ms, "GBps": gbs, "bytes": nb}), flush=True)
