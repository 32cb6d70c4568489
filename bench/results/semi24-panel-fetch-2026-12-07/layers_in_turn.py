"""MiniLM's 36 2:4 layer shapes (6 x [4 x 384x384, 1536x384, 384x1536]), float32, at N tokens
(B as a Linear passes it: x.T, column-major): each layer's median call time when the 36 are
called in turn (each weight from the LLC, as in a model) and when one is called back to back
(its weight in L2). python layers_in_turn.py N [REPS]"""
import time, torch, sparsekern, sys
torch.manual_seed(0)
def prune24(W):
    M,K=W.shape; g=W.view(M,K//4,4); idx=g.abs().topk(2,dim=-1).indices
    return W*torch.zeros_like(g).scatter_(-1,idx,1).view(M,K)
N=int(sys.argv[1]) if len(sys.argv)>1 else 16
REPS=int(sys.argv[2]) if len(sys.argv)>2 else 200
shapes=[(384,384)]*4+[(1536,384),(384,1536)]
layers=[]
for l in range(6):
    for M,K in shapes:
        A=sparsekern.to_sparse(prune24(torch.randn(M,K)),layout="2:4"); layers.append((M,K,A,torch.randn(N,K).T))
def call(L):
    M,K,A,B=L; return torch.ops.sparsekern.spmm(A.values,A.indices,A.offsets,M,K,"2:4",B,None)
def model_pass(reps=REPS):
    per=[[] for _ in layers]
    for r in range(reps):
        for i,L in enumerate(layers):
            t=time.perf_counter_ns(); call(L); per[i].append(time.perf_counter_ns()-t)
    return [sorted(p)[len(p)//2]/1e3 for p in per]
def warm(reps=REPS):
    out=[]
    for L in layers[:6]:
        for _ in range(20): call(L)
        ts=[]
        for _ in range(reps):
            t=time.perf_counter_ns(); call(L); ts.append(time.perf_counter_ns()-t)
        out.append(sorted(ts)[reps//2]/1e3)
    return out
for rnd in range(1):
    rp=model_pass(); w=warm()
    import statistics
    print("rotating: q/k/v/o %.1f up %.1f down %.1f  total %.2f ms" % (statistics.median([rp[i] for i in range(36) if i%6<4]), statistics.median(rp[4::6]), statistics.median(rp[5::6]), sum(rp)/1e3))
    print("warm    : q %.1f up %.1f down %.1f  total %.2f ms" % (w[0], w[4], w[5], 6*(4*w[0]+w[4]+w[5])/1e3))
