import time, statistics as st, torch, sparsekern as sk
torch.set_num_threads(2); torch.manual_seed(0)
def med(fn, n):
    for _ in range(3): fn()
    xs=[]
    for _ in range(n):
        a=time.perf_counter(); fn(); xs.append(time.perf_counter()-a)
    return st.median(xs)*1e3
for M,K in [(1536,384),(768,3072),(4096,4096)]:
    W=torch.randn(M,K); w=W.view(M,K//4,4); w.scatter_(-1, w.abs().argsort(-1)[...,:3], 0)
    f=sk.to_sparse(W,layout="1:4")
    row=[]
    for N in (4,5,6,8):
        Xt=torch.randn(N,K).t()
        with torch.no_grad(): row.append(f"N={N} {med(lambda: sk.spmm(f,Xt), 60 if M>2000 else 300):.4f}")
    print(M,K," | ".join(row))
