"""Times the three products of SparseLinear's forward+backward, and the whole step, against dense."""
import os, sys, time, statistics, torch
import sparsekern as sk  # noqa: F401
from sparsekern.formats import to_sparse
torch.set_num_threads(2)
layout = sys.argv[1]; M, K, N = map(int, sys.argv[2:5]); reps = int(os.environ.get("R", "5"))
torch.manual_seed(0)
W = torch.randn(M, K)
if layout == "2:4":
    W = W * (torch.rand(M, K // 4, 4).argsort(-1).reshape(M, K) < 2)
else:
    W = W * (torch.rand(M, K) < 0.1)
f = to_sparse(W, layout)
v, i, o, MM, KK, lay = f.op_args()
x = torch.randn(N, K)
B = x.t()               # [K, N] transposed view, as SparseLinear passes it
G = torch.randn(M, N)   # dY^T [M, N]
Gt = torch.randn(N, M).t()  # dY^T as a transposed view (what autograd hands over)
ops = torch.ops.sparsekern
cases = {
    "fwd spmm": lambda: ops.spmm(v, i, o, MM, KK, lay, B, None),
    "transposed (G contig)": lambda: ops.spmm_transposed(v, i, o, MM, KK, lay, G),
    "transposed (G view)": lambda: ops.spmm_transposed(v, i, o, MM, KK, lay, Gt),
    "sampled_dot (G contig)": lambda: ops.spmm_sampled_dot(v, i, o, MM, KK, lay, G, B),
    "sampled_dot (G view)": lambda: ops.spmm_sampled_dot(v, i, o, MM, KK, lay, Gt, B),
    "dense mm": lambda: x @ W.t(),
}
res = {k: [] for k in cases}
for r in range(reps):
    for k, fn in cases.items():
        t0 = time.perf_counter(); fn(); res[k].append(time.perf_counter() - t0)
for k, t in res.items():
    print(f"{layout} {M}x{K} N={N} {k:24s} {statistics.median(t)*1e3:8.2f} ms  ({min(t)*1e3:.2f}..{max(t)*1e3:.2f})")
