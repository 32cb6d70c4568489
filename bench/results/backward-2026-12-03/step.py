import sys, time, statistics, torch
from sparsekern.bench import training as T
torch.set_num_threads(2)
layout = sys.argv[1]; M, K, N = map(int, sys.argv[2:5])
gen = torch.Generator().manual_seed(0)
bs = (32, 32) if layout == "bsr" else None
sp = 0.5 if layout == "2:4" else 0.9
dense = T._pruned(M, K, layout, bs, sp, gen)
from sparsekern.nn import SparseLinear
sparse = SparseLinear.from_dense(dense, layout, bs)
x = torch.randn(N, K, generator=gen).requires_grad_(True)
g = torch.randn(N, M, generator=gen)
fd, fs = T.step_fn(dense, g), T.step_fn(sparse, g)
res = {"dense": [], "sparse": []}
for f in (fd, fs): f(x); f(x)
for r in range(int(sys.argv[5]) if len(sys.argv) > 5 else 7):
    for n, f in (("dense", fd), ("sparse", fs)):
        t0 = time.perf_counter(); f(x); res[n].append(time.perf_counter() - t0)
d, s = statistics.median(res["dense"]), statistics.median(res["sparse"])
print(f"{layout} {M}x{K} N={N}: dense {d*1e3:.1f} ms  sparse {s*1e3:.1f} ms ({min(res['sparse'])*1e3:.1f}..{max(res['sparse'])*1e3:.1f})  speedup {d/s:.2f}x")
