"""1:4 vs 2:4 vs best dense (torch, NumPy), 2 threads, warm, medians; rounds interleaved."""
import sys, time, statistics as st, json
import numpy as np, torch, sparsekern as sk
from threadpoolctl import threadpool_limits, threadpool_info
torch.set_num_threads(2); threadpool_limits(2)
def med(fn, n):
    for _ in range(3): fn()
    xs=[]
    for _ in range(n):
        a=time.perf_counter(); fn(); xs.append(time.perf_counter()-a)
    return st.median(xs)
out=[]
shapes=[(1536,384),(768,3072),(4096,4096)]
Ns=[1,2,4,8,16,32,128]
torch.manual_seed(0)
cases={}
for M,K in shapes:
    W=torch.randn(M,K)
    W14=W.clone(); w=W14.view(M,K//4,4); w.scatter_(-1, w.abs().argsort(-1)[...,:3], 0)
    W24=W.clone(); w=W24.view(M,K//4,4); w.scatter_(-1, w.abs().argsort(-1)[...,:2], 0)
    cases[(M,K)]=(sk.to_sparse(W14,layout="1:4"), sk.to_sparse(W24,layout="2:4"), W, W.numpy())
res={}
for rnd in range(3):
  for (M,K),(f14,f24,W,Wn) in cases.items():
    for N in Ns:
        X=torch.randn(N,K); Xt=X.t(); Xn=X.numpy()
        n = 40 if M*K*N > 4096*4096*8 else 200
        with torch.no_grad():
            r={"1:4": med(lambda: sk.spmm(f14,Xt), n), "2:4": med(lambda: sk.spmm(f24,Xt), n),
               "torch": med(lambda: torch.nn.functional.linear(X, W), n),
               "numpy": med(lambda: Xn @ Wn.T, n)}
        for k,v in r.items(): res.setdefault(f"{M}x{K} N={N}",{}).setdefault(k,[]).append(v*1e3)
json.dump({"blas":[i.get("architecture") for i in threadpool_info()], "ms":res}, open(sys.argv[1],"w"), indent=1)
print("case | 1:4 ms | 2:4 ms | torch ms | numpy ms | 1:4 vs best dense | 2:4 vs best dense")
for c,r in res.items():
    m={k:st.median(v) for k,v in r.items()}; best=min(m["torch"],m["numpy"])
    print(f"{c} | {m['1:4']:.4f} | {m['2:4']:.4f} | {m['torch']:.4f} | {m['numpy']:.4f} | {best/m['1:4']:.2f}x | {best/m['2:4']:.2f}x")
