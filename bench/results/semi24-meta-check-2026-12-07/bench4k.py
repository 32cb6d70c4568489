import sys, time, statistics, torch
import sparsekern as sk, sparsekern.nn as snn
torch.set_num_threads(2)
out=[]
for (M,K) in [(4096,4096)]:
    g=torch.Generator().manual_seed(0)
    W = torch.randn(M,K,generator=g).view(M,K//4,4); idx=W.abs().argsort(-1)[...,:2]; W=W.scatter(-1,idx,0).view(M,K)
    A = sk.to_sparse(W, layout="2:4")
    args=A.op_args()
    op=torch.ops.sparsekern.spmm.default
    for N in (1,4):
        x=torch.randn(N,K,generator=g); xt=x.t()
        n = max(20, int(3e5/(M*K*max(N,4)/1e3)))
        with torch.inference_mode():
            for _ in range(n//4+5): op(*args, xt, None)
            xs=[]
            for r in range(7):
                s=time.perf_counter()
                for _ in range(n): op(*args, xt, None)
                xs.append((time.perf_counter()-s)/n*1e6)
        out.append(f"{M}x{K} N={N} {statistics.median(xs):.2f}")
print(" | ".join(out))
