import torch, time, statistics as st, sparsekern as sk, sys, os
torch.manual_seed(0)
M=int(os.environ.get("M","4096")); K=int(os.environ.get("K","4096"))
T=int(os.environ.get("T","1")); torch.set_num_threads(T)
w=torch.randn(M,K)
g=w.abs().view(M,-1,4); idx=g.topk(2,dim=-1).indices; m=torch.zeros_like(g).scatter_(-1,idx,1).view(M,K)
l2=torch.nn.Linear(K,M,bias=False); l2.weight.data=w*m
s=sk.sparsify(torch.nn.Sequential(l2),layout="2:4")
lin=torch.nn.Linear(K,M,bias=False); lin.weight.data=w.clone()
x=torch.randn(1,K)
n=int(sys.argv[1]) if len(sys.argv)>1 else 200
with torch.inference_mode():
  for _ in range(20): s(x); lin(x)
  a=[];b=[]
  for _ in range(n):
    t=time.perf_counter(); s(x); a.append(time.perf_counter()-t)
    t=time.perf_counter(); lin(x); b.append(time.perf_counter()-t)
print("%dx%d T=%d 2:4 %.3f dense %.3f ratio %.2f"%(M,K,T,st.median(a)*1e3,st.median(b)*1e3,st.median(b)/st.median(a)))
