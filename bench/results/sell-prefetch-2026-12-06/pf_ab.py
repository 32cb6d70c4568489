import os, time, statistics, torch, sys, copy
sys.path.insert(0, "/work/main")
import sparsekern as sk
from sparsekern.prune import prune_model
torch.set_num_threads(int(os.environ.get("T","2")))
CFG=[("off","0","0"),("1K T0","1024","0"),("2K T0","2048","0"),("2K T1","2048","1"),("4K T1","4096","1"),("8K T1","8192","1"),("4K T1x2","4096","2")]
flush = torch.ones(64*1024*1024//4*2)
op=torch.ops.sparsekern.spmm
shapes=[tuple(map(int,s.split("x"))) for s in os.environ.get("SH","4096x4096,11008x4096,4096x11008,1536x384").split(",")]
for (M,K) in shapes:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(K, M, bias=False))
    prune_model(net, 0.9, granularity="fine", criterion="l1")
    spm = sk.sparsify(copy.deepcopy(net), layout="sell")[0]
    p,b=spm._parameters, spm._buffers
    xt = torch.randn(1, K).t()
    f=lambda: op(p["values"], b["indices"], b["offsets"], M, K, "sell", xt, None)
    ref=f()
    res={(c[0],cold):[] for c in CFG for cold in (0,1)}
    with torch.inference_mode():
        for rnd in range(int(os.environ.get("R","6"))):
            for name,pf,pfh in CFG:
                os.environ["SK_EXP_PF"]=pf; os.environ["SK_EXP_PFH"]=pfh
                assert torch.equal(f(), ref)
                for cold in (0,1):
                    for _ in range(3): f()
                    ts=[]
                    for _ in range(15):
                        if cold: flush.sum()
                        t0=time.perf_counter(); f(); ts.append((time.perf_counter()-t0)*1e3)
                    res[(name,cold)].append(statistics.median(ts))
    base={cold:statistics.median(res[("off",cold)]) for cold in (0,1)}
    for cold in (0,1):
        print(f"{M}x{K} {'cold' if cold else 'warm'}: " + "  ".join(f"{n} {statistics.median(res[(n,cold)]):.3f} ({base[cold]/statistics.median(res[(n,cold)]):.2f}x, {min(res[(n,cold)]):.3f}-{max(res[(n,cold)]):.3f})" for n,_,_ in CFG))
