"""Quiet machine: does the auto pool's guard fire falsely? 2:4 4096^2 GEMV interleaved with
dense nn.Linear calls (the case where the own pool is slower), auto vs torch pool."""
import time, statistics, torch, sys
import sparsekern as sk
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
torch.manual_seed(0)
M = 4096
W = torch.randn(M, M); g = W.view(M, M // 4, 4); keep = torch.zeros_like(g, dtype=torch.bool)
keep.scatter_(2, g.abs().topk(2, -1).indices, True); W = (g * keep).view(M, M)
A = to_sparse(W, layout="2:4"); x = torch.randn(1, M)
dense = torch.nn.Linear(M, M)
small = to_sparse(W[:512, :512].contiguous(), layout="2:4"); xs = torch.randn(1, 512)
with torch.no_grad():
    for _ in range(5): linear(x, A); dense(x)
    ts, tsm = [], []
    for _ in range(60):
        dense(x)
        t0 = time.perf_counter(); linear(x, A); ts.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); linear(xs, small); tsm.append(time.perf_counter() - t0)
print(f"{sys.argv[1]}: 4096^2 2:4 GEMV after nn.Linear: median {statistics.median(ts)*1e3:.3f} ms; 512^2: {statistics.median(tsm)*1e3:.4f} ms")
