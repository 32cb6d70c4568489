import sys, time, statistics, torch, os
sys.path.insert(0, "/work/main")
import sparsekern as sk
op=torch.ops.sparsekern.spmm
torch.set_num_threads(int(os.environ.get("T","2")))
def bench(fn, n):
    for _ in range(max(30, n//5)): fn()
    ts=[]
    for _ in range(5):
        t0=time.perf_counter()
        for _ in range(n): fn()
        ts.append((time.perf_counter()-t0)/n*1e6)
    return statistics.median(ts)
torch.manual_seed(0)
for (M,K) in [(384,384),(1536,384),(384,1536),(768,3072),(3072,768),(4096,4096)]:
    W=torch.randn(M,K); Wp=W.reshape(M,K//4,4); Wp=Wp.scatter(-1, Wp.abs().argsort(-1)[..., :2], 0.0); W=Wp.reshape(M,K)
    A=sk.to_sparse(W,"2:4"); v,i,o=A.op_args()[:3]
    n = max(10, int(1e5 // (M*K/1000)))
    line=[]
    for N in (1, 4, 10):
        x=torch.randn(K,N)
        res={0:[],1:[]}
        with torch.inference_mode():
            for mode in (0,1):
                if mode: os.environ["SK_EXP_TL"]="1"
                else: os.environ.pop("SK_EXP_TL", None)
                y=op(v,i,o,M,K,'2:4',x,None); assert (y-W@x).abs().max() < 1e-3
            for r in range(8):
                for mode in ((0,1) if r%2==0 else (1,0)):
                    if mode: os.environ["SK_EXP_TL"]="1"
                    else: os.environ.pop("SK_EXP_TL", None)
                    res[mode].append(bench(lambda: op(v,i,o,M,K,'2:4',x,None), n))
        ratios=[a/b for a,b in zip(res[0],res[1])]
        line.append(f"N{N}: base {statistics.median(res[0]):.1f} tl {statistics.median(res[1]):.1f} us x{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"{M}x{K} T{torch.get_num_threads()}: " + " | ".join(line), flush=True)
