import time, statistics, torch, sparsekern as sk
from sparsekern.formats import to_sparse
torch.set_num_threads(2)
ops = torch.ops.sparsekern
for (M, K, N) in [(4096, 4096, 512), (1536, 384, 2048), (4096, 4096, 32)]:
    torch.manual_seed(0)
    W = torch.randn(M, K) * (torch.rand(M, K) < 0.1)
    v, i, o, MM, KK, l = to_sparse(W, "csc").op_args()
    B = torch.randn(N, K).t()
    res = {"same": [], "changed": [], "mul_only": []}
    for r in range(9):
        ops.spmm(v, i, o, MM, KK, l, B, None)
        t0 = time.perf_counter(); ops.spmm(v, i, o, MM, KK, l, B, None); res["same"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); v.mul_(1.0000001); ops.spmm(v, i, o, MM, KK, l, B, None); res["changed"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); v.mul_(1.0000001); res["mul_only"].append(time.perf_counter() - t0)
    print(f"{M}x{K}/{N}", " ".join(f"{k} {statistics.median(t)*1e3:.2f}" for k, t in res.items()))
