# Quiet end-to-end MiniLM (dense / all-CSC 90% / 2:4), 1 sentence and 32 sentences: for an OMP_WAIT_POLICY A/B (one process per setting).
import sys, copy, time, statistics, os, torch
sys.path.insert(0, "/tmp/trialM"); sys.path.insert(0, "/work/main")
from common import *
import sparsekern as sk
from sparsekern import prune
torch.set_num_threads(2)
tok, dense = load()
m = copy.deepcopy(dense); prune.prune_model(m, 0.9)
c = sk.sparsify(copy.deepcopy(m), layout="csc")
b1 = tok(SENTS[:1], return_tensors="pt"); b32 = tok(SENTS[:32], return_tensors="pt", padding=True)
res = {}
with torch.inference_mode():
    for rep in range(3):
        for lab, b, n in (("1", b1, 50), ("32", b32, 5)):
            for name, f in (("dense", m), ("csc90", c)):
                f(**b); v = []
                for _ in range(n):
                    t0 = time.perf_counter(); f(**b); v.append(time.perf_counter() - t0)
                res.setdefault((lab, name), []).append(statistics.median(v))
print(os.environ.get("OMP_WAIT_POLICY", "default"), {f"{k[0]}x {k[1]}": "%.2f ms" % (min(v) * 1e3) for k, v in res.items()})
