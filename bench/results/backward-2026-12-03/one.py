import sys, time, torch
from sparsekern.formats import to_sparse
torch.set_num_threads(2)
op = sys.argv[1]; M, K, N = map(int, sys.argv[2:5])
torch.manual_seed(0)
W = torch.randn(M, K) * (torch.rand(M, K) < 0.1) if len(sys.argv) < 7 else torch.randn(M, K) * (torch.rand(M, K // 4, 4).argsort(-1).reshape(M, K) < 2)
v, i, o, MM, KK, lay = to_sparse(W, "csc" if len(sys.argv) < 7 else "2:4").op_args()
B = torch.randn(N, K).t(); G = torch.randn(N, M).t()
ops = torch.ops.sparsekern
f = {"t": lambda: ops.spmm_transposed(v, i, o, MM, KK, lay, G),
     "s": lambda: ops.spmm_sampled_dot(v, i, o, MM, KK, lay, G, B)}[op]
f()
t0 = time.perf_counter()
for _ in range(int(sys.argv[5]) if len(sys.argv) > 5 else 10): f()
print((time.perf_counter() - t0) / (int(sys.argv[5]) if len(sys.argv) > 5 else 10) * 1e3, "ms")
