import os, sys, time, copy, statistics, torch
sys.path.insert(0, "/work/main")
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
torch.set_num_threads(2)
impl = sys.argv[1]; layout = sys.argv[2]
dense, _ = load_minilm()
enc = dense.encoder
enc.config._attn_implementation = impl
for l in enc.encoder.layer:
    l.attention.self.config._attn_implementation = impl if hasattr(l.attention.self,'config') else None
m = copy.deepcopy(dense)

gran, ratio = {"csc": ("fine", 0.9), "bsr": ((32,32), 0.9), "2:4": ("2:4", None), "dense": (None,None)}[layout]
if layout != "dense":
    prune_model(m, ratio, granularity=gran, criterion="l1")
    m = sk.sparsify(m, layout=layout)
cm = torch.compile(m) if os.environ.get("NOCOMP") is None else m
B,T = int(sys.argv[3]), int(sys.argv[4])
ids = (torch.arange(B*T)*7919 % 29000 + 1000).reshape(B,T); mask = torch.ones(B,T,dtype=torch.int64)
with torch.inference_mode():
    ref = m(ids, mask)
    for _ in range(3): out = cm(ids, mask)
    print("maxdiff", (out-ref).abs().max().item())
    ts=[]
    for _ in range(12 if B>1 else 300):
        s=time.perf_counter(); cm(ids,mask); ts.append((time.perf_counter()-s)*1e3)
print(impl, layout, "median %.1f ms  min %.1f max %.1f" % (statistics.median(ts), min(ts), max(ts)))
