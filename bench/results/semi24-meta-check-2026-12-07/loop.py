import sys, torch
import sparsekern as sk
torch.set_num_threads(1)
M,K=(int(v) for v in sys.argv[1].split("x")); N=int(sys.argv[2]); n=int(sys.argv[3])
g=torch.Generator().manual_seed(0)
W = torch.randn(M,K,generator=g).view(M,K//4,4); idx=W.abs().argsort(-1)[...,:2]; W=W.scatter(-1,idx,0).view(M,K)
A = sk.to_sparse(W, layout="2:4"); args=A.op_args(); x=torch.randn(K,N,generator=g)
op=torch.ops.sparsekern.spmm.default
with torch.inference_mode():
    for _ in range(n): op(*args, x, None)
