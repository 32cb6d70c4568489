import os, time, statistics, torch, sys, copy
sys.path.insert(0, "/work/main")
import sparsekern as sk
from sparsekern.prune import prune_model
torch.set_num_threads(int(os.environ.get("T","2")))
flush = torch.ones(64*1024*1024//4*2)
op=torch.ops.sparsekern.spmm
shapes=[tuple(map(int,s.split("x"))) for s in os.environ.get("SH","4096x4096,11008x4096,4096x11008,1536x384,384x1536,3072x768").split(",")]
sps=[float(x) for x in os.environ.get("SP","0.9,0.95").split(",")]
dt=getattr(torch, os.environ.get("DT","float32"))
for (M,K) in shapes:
  for sp in sps:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(K, M, bias=False))
    prune_model(net, sp, granularity="fine", criterion="l1")
    net = net.to(dt)
    spm = sk.sparsify(copy.deepcopy(net), layout="sell")[0]
    p,b=spm._parameters, spm._buffers
    xt = torch.randn(1, K).to(dt).t()
    f=lambda: op(p["values"], b["indices"], b["offsets"], M, K, "sell", xt, None)
    os.environ.pop("SK_EXP_UL", None); ref=f()
    os.environ["SK_EXP_UL"]="1"; assert torch.equal(f(), ref), "results differ"
    res={(m,c):[] for m in (0,1) for c in (0,1)}
    n = max(5, int(3e6 // (M*K*(1-sp))))
    with torch.inference_mode():
        for rnd in range(6):
            for mode in ((0,1) if rnd%2==0 else (1,0)):
                if mode: os.environ["SK_EXP_UL"]="1"
                else: os.environ.pop("SK_EXP_UL", None)
                for _ in range(3): f()
                ts=[]
                for _ in range(15):
                    t0=time.perf_counter()
                    for _ in range(n): f()
                    ts.append((time.perf_counter()-t0)/n*1e3)
                res[(mode,0)].append(statistics.median(ts))
                ts=[]
                for _ in range(15):
                    flush.sum(); t0=time.perf_counter(); f(); ts.append((time.perf_counter()-t0)*1e3)
                res[(mode,1)].append(statistics.median(ts))
    out=[]
    for c in (0,1):
        r=[a/b for a,b in zip(res[(0,c)],res[(1,c)])]
        out.append(f"{'cold' if c else 'warm'} {statistics.median(res[(0,c)]):.3f}->{statistics.median(res[(1,c)]):.3f} ms x{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})")
    print(f"{M}x{K} {sp} {dt}: " + " | ".join(out), flush=True)
