# 2:4 GEMV (N=1): 1 thread against 2, alternating in one process (torch.set_num_threads per block)
import sys, time, statistics, torch
import sparsekern as sk
res = {}
shapes = [(384,384),(384,768),(768,384),(768,768),(1536,384),(384,1536),(1536,1536)]
ops = {}
for (M,K) in shapes:
    g=torch.Generator().manual_seed(0)
    W = torch.randn(M,K,generator=g).view(M,K//4,4); idx=W.abs().argsort(-1)[...,:2]; W=W.scatter(-1,idx,0).view(M,K)
    A = sk.to_sparse(W, layout="2:4")
    ops[(M,K)] = (A.op_args(), torch.randn(K,1,generator=g))
op=torch.ops.sparsekern.spmm.default
with torch.inference_mode():
    for rnd in range(6):
        for s,(args,x) in ops.items():
            n = max(50, int(2e7/(s[0]*s[1])))
            for th in (1,2):
                torch.set_num_threads(th)
                for _ in range(n//5): op(*args, x, None)
                t=time.perf_counter()
                for _ in range(n): op(*args, x, None)
                res.setdefault((s,th),[]).append((time.perf_counter()-t)/n*1e6)
for s in ops:
    a,b = res[(s,1)], res[(s,2)]
    print(f"{s[0]}x{s[1]} work={s[0]*s[1]} 1T {statistics.median(a):6.2f} ({min(a):.2f}-{max(a):.2f})  2T {statistics.median(b):6.2f} ({min(b):.2f}-{max(b):.2f})  2T/1T {statistics.median(b)/statistics.median(a):.2f}")
