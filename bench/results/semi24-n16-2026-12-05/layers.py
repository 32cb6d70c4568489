import os, time, statistics, torch, sys, copy
sys.path.insert(0, "/work/main")
import sparsekern as sk
from sparsekern.prune import prune_model
torch.set_num_threads(int(os.environ.get("T", "2")))
N = int(os.environ.get("N", "16"))
LAY = os.environ.get("L", "2:4")
for (M, K) in [(384, 384), (1536, 384), (384, 1536)]:
    net = torch.nn.Sequential(torch.nn.Linear(K, M))
    dense = copy.deepcopy(net)
    if LAY == "2:4": prune_model(net, None, granularity="2:4", criterion="l1")
    else: prune_model(net, 0.9, granularity="fine", criterion="l1")
    x = torch.randn(N, K)
    spm = sk.sparsify(copy.deepcopy(net), layout=LAY)
    fns = {"dense": lambda: dense(x), "sp": lambda: spm(x)}
    ts = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(20):
            for k, f in fns.items(): f()
        for _ in range(30):
            for k, f in fns.items():
                t0 = time.perf_counter();
                for _ in range(20): f()
                ts[k].append((time.perf_counter() - t0) / 20 * 1e6)
    md = {k: statistics.median(v) for k, v in ts.items()}
    fl = 2 * M * K * N
    print(f"{LAY} {M}x{K} N={N}: dense {md['dense']:.1f} us ({fl/md['dense']/1e3:.0f} GF/s), sp {md['sp']:.1f} us speedup {md['dense']/md['sp']:.2f}")
