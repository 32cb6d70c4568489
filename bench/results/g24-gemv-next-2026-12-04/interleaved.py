import os, sys, time, statistics, json
import numpy as np, torch
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(2)
M, K = map(int, os.environ.get("SHAPE", "4096x4096").split("x"))
g = torch.Generator().manual_seed(0)
L = max(3, -(-(3 * 32 << 20) // (M * K * 2)))
Ws = [torch.randn(M, K, generator=g) for _ in range(L)]
As = [to_sparse(magnitude.prune(w, "2:4", 0.5, None), layout="2:4") for w in Ws]
Wn = [w.numpy() for w in Ws]
x = torch.randn(1, K, generator=g); xn = x.numpy()[0]
modes = ["0", "1", "2"]
ts = {m: [] for m in modes}; ts["numpy"] = []
k = 0
for rep in range(int(os.environ.get("REPS", "60"))):
    for m in modes[rep % 3:] + modes[:rep % 3]:
        os.environ["SK_EXP_NEXT"] = m
        t = time.perf_counter(); linear(x, As[k % L]); ts[m].append(time.perf_counter() - t); k += 1
    t = time.perf_counter(); Wn[k % L] @ xn; ts["numpy"].append(time.perf_counter() - t); k += 1
out = {m: statistics.median(v[5:]) * 1e3 for m, v in ts.items()}
print(json.dumps({"shape": f"{M}x{K}", **{m: round(v, 4) for m, v in out.items()},
                  **{f"x{m}": round(out['numpy'] / out[m], 3) for m in modes}}))
