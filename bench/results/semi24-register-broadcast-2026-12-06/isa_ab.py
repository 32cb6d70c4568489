import os, torch, time, statistics as st, sys
import sparsekern as sk
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(2)
def tm(f, n):
    f()
    t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n
N=int(sys.argv[1]); lays=sys.argv[2].split(',')
for lay in lays:
  sp,bs = {'csc':(0.9,None),'2:4':(0.5,None),'bsr':(0.9,(32,32))}[lay]
  for (M,K) in [(384,384),(1536,384),(384,1536)]:
    W=torch.randn(M,K); x=torch.randn(N,K)
    A=to_sparse(magnitude.prune(W,lay,sp,bs),layout=lay,blocksize=bs)
    acc={'avx512':[], 'avx2':[]}
    with torch.inference_mode():
        n=max(3, int(0.02/ (1e-9*M*K*N*(1-sp)/1.0+1e-5)))
        for r in range(10):
            for isa in (['avx512','avx2'] if r%2==0 else ['avx2','avx512']):
                os.environ['SPARSEKERN_CPU_ISA']=isa; sk.backends.reload_env()
                acc[isa].append(tm(lambda: linear(x,A), n))
    a,b=st.median(acc['avx512']),st.median(acc['avx2'])
    print(f"{lay} {M}x{K} N={N}: avx512 {a*1e3:.3f}ms avx2 {b*1e3:.3f}ms  avx2/avx512 speed {a/b:.2f}x  [{min(acc['avx512'])*1e3:.3f}-{max(acc['avx512'])*1e3:.3f} | {min(acc['avx2'])*1e3:.3f}-{max(acc['avx2'])*1e3:.3f}]", flush=True)
