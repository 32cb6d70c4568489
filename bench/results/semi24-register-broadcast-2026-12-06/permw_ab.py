import os, torch, time, statistics as st, sys
os.environ["SK_EXP_PERMW"] = "0"
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(int(sys.argv[1]))
Ns = [int(v) for v in sys.argv[2].split(",")]
dt = getattr(torch, sys.argv[3]) if len(sys.argv) > 3 else torch.float32
shapes = [(384,384),(1536,384),(384,1536),(4096,4096)]
def tm(f, n):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n
for N in Ns:
  for (M,K) in shapes:
    if M*K*N > 4096*4096*512: continue
    W=torch.randn(M,K); x=torch.randn(N,K).to(dt)
    A=to_sparse(magnitude.prune(W,'2:4',0.5,None).to(dt),layout='2:4')
    ref = linear(x.float(), to_sparse(magnitude.prune(W,'2:4',0.5,None).to(dt).float(),layout='2:4'))
    n=max(3, int(0.015/(M*K*N/2/16/1.5e9+5e-6)))
    acc={'0':[], '1':[]}
    with torch.inference_mode():
        for r in range(10):
            for v in (['0','1'] if r%2==0 else ['1','0']):
                os.environ['SK_EXP_PERMW']=v
                acc[v].append(tm(lambda: linear(x,A), n))
        for v in '01':
            os.environ['SK_EXP_PERMW']=v
            err=(linear(x,A).float()-ref).abs().max().item()
            assert err < (1e-3 if dt==torch.float32 else 0.5), (v, err)
    a,b=st.median(acc['0']),st.median(acc['1'])
    print(f"N={N} {M}x{K} {dt}: bcast {a*1e3:.4f}ms perm {b*1e3:.4f}ms  speedup {a/b:.3f}x  [{min(acc['0'])/b:.2f}-{max(acc['0'])/b:.2f}] perm GvFMA/s {M*K*N/2/16/b/1e9:.2f}", flush=True)
