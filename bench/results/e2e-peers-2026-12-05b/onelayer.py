import os, sys, time, statistics, copy, torch
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/bench")
import sparsekern as sk
from e2e_peers import make_inputs
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
torch.set_num_threads(2)
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
one = copy.deepcopy(dense)
name = [n for n, m in one.named_modules() if n.endswith("layer.5.attention.self.query")][0]
prune_model(one, 0.85, granularity="fine", criterion="l1", layers=[name])
one = sk.sparsify(one, layout="csc")
ids, mask = make_inputs(1, 17)
ts = {"dense": [], "one csc layer": []}
with torch.inference_mode():
    for m in (dense, one):
        for _ in range(20): m(ids, mask)
    for r in range(int(os.environ.get("ROUNDS", 15))):
        for k, m in (("dense", dense), ("one csc layer", one)):
            t0 = time.perf_counter()
            for _ in range(30): m(ids, mask)
            ts[k].append((time.perf_counter() - t0) / 30 * 1e3)
md = {k: statistics.median(v) for k, v in ts.items()}
print(os.environ.get("SPARSEKERN_CPU_POOL", "auto"), {k: round(v, 3) for k, v in md.items()}, "ratio dense/one", round(md["dense"] / md["one csc layer"], 3),
      "spread", {k: (round(min(v), 2), round(max(v), 2)) for k, v in ts.items()})
