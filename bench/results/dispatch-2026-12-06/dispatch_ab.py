# Per-call time of small sparse layers (where dispatch overhead shows): median of 3000 calls each.
import os, sys, time, statistics, torch
sys.path.insert(0, os.environ["ROOT"])
import sparsekern as sk
from sparsekern.bench import magnitude
torch.set_num_threads(2); torch.manual_seed(0)
lin = torch.nn.Linear(384, 384)
mods = {}
for lay, sp, bs in (("csc", 0.9, None), ("bsr", 0.9, (32, 32)), ("2:4", 0.5, None), ("sell", 0.9, None)):
    l2 = torch.nn.Linear(384, 384); l2.weight.data.copy_(magnitude.prune(lin.weight.detach(), lay, sp, bs))
    mods[lay] = sk.SparseLinear.from_dense(l2, layout=lay, **({"blocksize": bs} if bs else {}))
out = []
with torch.inference_mode():
    for n in (1, 12):
        x = torch.randn(n, 384)
        for lay, m in mods.items():
            if lay == "sell" and n > 2: continue
            m(x); v = []
            for _ in range(3000):
                t0 = time.perf_counter(); m(x); v.append(time.perf_counter() - t0)
            out.append(f"{lay}@N{n} {statistics.median(v)*1e6:.1f}us")
print(os.path.basename(os.environ["ROOT"]), " ".join(out))
