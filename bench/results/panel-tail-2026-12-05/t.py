import torch, time, sys, json, sparsekern as sk
from sparsekern import prune
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
def t(f, x, n=300):
    for _ in range(20): f(x)
    ts=[]
    for r in range(5):
        t0=time.perf_counter()
        for _ in range(n): f(x)
        ts.append((time.perf_counter()-t0)/n*1e6)
    ts.sort(); return ts[2]
out = {}
for (o, i) in [(384, 384), (1536, 384), (384, 1536)]:
    for layout, gran, r in [("2:4", "2:4", None), ("csc", "fine", 0.9)]:
        m = torch.nn.Sequential(torch.nn.Linear(i, o)); prune.prune_model(m, r, gran)
        s = sk.sparsify(m, layout=layout)
        for N in [16, 17, 18, 19, 33]:
            x = torch.randn(N, i)
            with torch.inference_mode():
                out[f"{layout} {o}x{i} N={N}"] = t(s, x)
print(json.dumps(out))
