"""Cold 2:4 GEMV vs dense mv, 4096x4096, alternating, flush before each sample."""
import os, sys, time, statistics, torch
import sparsekern as sk
from sparsekern.formats import to_sparse
from sparsekern.timing.timers import CacheFlusher
torch.set_num_threads(int(os.environ.get("T", "2")))
M = K = int(os.environ.get("S", "4096"))
torch.manual_seed(0)
W = torch.randn(M, K)
W = W * (torch.rand(M, K//4, 4).argsort(-1).reshape(M, K) < 2)  # 2:4
f = to_sparse(W, "2:4")
x = torch.randn(K, 1)
op = torch.ops.sparsekern.spmm
args = f.op_args()
def sparse(): return op(*args, x)
def dense(): return torch.mm(W, x)
assert torch.allclose(sparse(), dense(), atol=1e-3, rtol=1e-3)
fl = CacheFlusher(int(os.environ.get("FL", str(2 * 110100480))))
res = {"sparse": [], "dense": []}
for r in range(int(os.environ.get("R", "15"))):
    for name, fn in (("sparse", sparse), ("dense", dense)) if r % 2 else (("dense", dense), ("sparse", sparse)):
        fl()
        t0 = time.perf_counter(); fn(); res[name].append(time.perf_counter() - t0)
b_s = M * K / 2 * 4 + M * K / 8
for k, v in res.items():
    m = statistics.median(v); nb = b_s if k == "sparse" else M * K * 4
    print(f"{k}: median {m*1e3:.3f} ms  min {min(v)*1e3:.3f} max {max(v)*1e3:.3f}  {nb/m/1e9:.1f} GB/s")
print("cold speedup", statistics.median(res["dense"]) / statistics.median(res["sparse"]))
