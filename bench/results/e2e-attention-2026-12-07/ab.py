import os, sys, time, copy, statistics, torch
sys.path.insert(0, "/work/main")
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
torch.set_num_threads(2)
layout = sys.argv[1]; B,T = int(sys.argv[2]), int(sys.argv[3])
dense, _ = load_minilm()
m = copy.deepcopy(dense)
gran, ratio = {"csc": ("fine", 0.9), "bsr": ((32,32), 0.9), "2:4": ("2:4", None), "dense": (None,None)}[layout]
if layout != "dense":
    prune_model(m, ratio, granularity=gran, criterion="l1")
    m = sk.sparsify(m, layout=layout)
ms = {}
for impl in ("sdpa", "eager"):
    mm = copy.deepcopy(m)
    mm.encoder.config._attn_implementation = impl
    ms[impl] = torch.compile(mm)
ids = (torch.arange(B*T)*7919 % 29000 + 1000).reshape(B,T); mask = torch.ones(B,T,dtype=torch.int64)
n = 4 if B > 1 else 100
res = {k: [] for k in ms}
with torch.inference_mode():
    ref = m(ids, mask)
    for k, cm in ms.items():
        for _ in range(3): out = cm(ids, mask)
        print(k, "maxdiff", (out-ref).abs().max().item())
    for r in range(8):
        for k, cm in ms.items():
            cm(ids, mask)
            s=time.perf_counter()
            for _ in range(n): cm(ids,mask)
            res[k].append((time.perf_counter()-s)*1e3/n)
for k,v in res.items():
    print(layout, B, T, k, "median %.2f ms  range %.2f-%.2f" % (statistics.median(v), min(v), max(v)))
