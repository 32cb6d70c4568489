import torch, time, statistics as st, sparsekern as sk, sys, os
torch.manual_seed(0)
M=int(os.environ.get("M","4096")); K=int(os.environ.get("K","4096")); sp=float(os.environ.get("SP","0.9"))
T=int(os.environ.get("T","2")); torch.set_num_threads(T)
w=torch.randn(M,K)
b=w.abs().view(M//32,32,K//32,32).sum((1,3)); thr=b.flatten().kthvalue(int(sp*b.numel())).values
m=(b>thr).float().repeat_interleave(32,0).repeat_interleave(32,1)
l2=torch.nn.Linear(K,M,bias=True); l2.weight.data=w*m
s=sk.sparsify(torch.nn.Sequential(l2),layout="bsr",blocksize=(32,32))
lin=torch.nn.Linear(K,M,bias=True); lin.weight.data=w*m; lin.bias.data=l2.bias.data.clone()
n=int(sys.argv[1]) if len(sys.argv)>1 else 200
out=[]
for N in [int(a) for a in sys.argv[2:]]:
  x=torch.randn(N,K)
  with torch.inference_mode():
    err=(s(x)-lin(x)).abs().max().item()
    for _ in range(10): s(x); lin(x)
    a=[];bb=[]
    for _ in range(n):
      t=time.perf_counter(); s(x); a.append(time.perf_counter()-t)
      t=time.perf_counter(); lin(x); bb.append(time.perf_counter()-t)
  out.append("N=%d %.3f/%.3f=%.2fx err %.1e"%(N,st.median(a)*1e3,st.median(bb)*1e3,st.median(bb)/st.median(a),err))
print(os.environ.get("SK_SMALLN","8"), "%dx%d %.0f%%"%(M,K,sp*100), " | ".join(out))
