import torch, time, statistics as st, sparsekern as sk, sys, os
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("T","1")))
M=4096
for K in [256, 512, 1024, 2048, 4096, 8192]:
    w=torch.randn(M,K); thr=w.abs().flatten().kthvalue(int(0.9*w.numel())).values; w=w*(w.abs()>thr)
    A=sk.to_sparse(w,layout="csc"); nnz=int((w!=0).sum())
    r=[]
    for N in [8,32]:
        x=torch.randn(N,K).t()
        f=lambda: torch.ops.sparsekern.spmm(*A.op_args(), x, None)
        for _ in range(5): f()
        a=[]
        for _ in range(30):
            t=time.perf_counter(); f(); a.append(time.perf_counter()-t)
        r.append("N=%d %.3f ms %.2f ns/entry"%(N,st.median(a)*1e3,st.median(a)*1e9/nnz))
    print("K=%d"%K," | ".join(r), flush=True)
