import time, statistics, torch, numpy as np, sparsekern as sk
from sparsekern.formats import to_sparse
torch.set_num_threads(2)
ops = torch.ops.sparsekern
for lay, dens in [("csc", 0.1), ("csc", 0.05), ("2:4", None), ("bsr", 0.1)]:
    M = K = 4096
    torch.manual_seed(0)
    W = torch.randn(M, K)
    if lay == "2:4":
        W = W * (torch.rand(M, K // 4, 4).argsort(-1).reshape(M, K) < 2)
        A = to_sparse(W, lay)
    elif lay == "bsr":
        keep = (torch.rand(M // 32, K // 32) < dens).repeat_interleave(32, 0).repeat_interleave(32, 1)
        W = W * keep; A = to_sparse(W, lay, blocksize=(32, 32))
    else:
        W = W * (torch.rand(M, K) < dens); A = to_sparse(W, lay)
    v, i, o, MM, KK, l = A.op_args()
    x = torch.randn(K, 1); xn = x.numpy(); Wn = W.numpy()
    res = {"sparse": [], "torch": [], "numpy": []}
    for r in range(200):
        t0 = time.perf_counter(); ops.spmm(v, i, o, MM, KK, l, x, None); res["sparse"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); W @ x; res["torch"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); Wn @ xn; res["numpy"].append(time.perf_counter() - t0)
    print(lay, dens, " ".join(f"{k} {statistics.median(t)*1e3:.3f}" for k, t in res.items()), f"sk GB/s {(v.numel()*v.element_size()+i.numel()*i.element_size())/statistics.median(res['sparse'])/1e9:.1f}")
