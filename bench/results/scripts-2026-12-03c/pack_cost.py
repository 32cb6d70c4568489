import time, statistics, torch, sparsekern as sk
from sparsekern.formats import to_sparse
torch.set_num_threads(2)
ops = torch.ops.sparsekern
for dens in [0.0005, 0.1]:
  for (M, K, N) in [(1536, 384, 2048), (4096, 4096, 512)]:
    torch.manual_seed(0)
    W = torch.randn(M, K) * (torch.rand(M, K) < dens)
    v, i, o, M, K, lay = to_sparse(W, "csc").op_args()
    G = torch.randn(N, M).t(); Gc = G.contiguous(); B = torch.randn(N, K).t()
    res = {"T view": [], "T contig": [], "S": []}
    for r in range(15):
        for k, f in (("T view", lambda: ops.spmm_transposed(v, i, o, M, K, lay, G)), ("T contig", lambda: ops.spmm_transposed(v, i, o, M, K, lay, Gc)), ("S", lambda: ops.spmm_sampled_dot(v, i, o, M, K, lay, G, B))):
            t0 = time.perf_counter(); f(); res[k].append(time.perf_counter() - t0)
    print(dens, f"{M}x{K}/{N}", " ".join(f"{k} {statistics.median(t)*1e3:.2f}" for k, t in res.items()))
