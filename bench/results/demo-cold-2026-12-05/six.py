import sys, copy, torch, statistics, time
import sparsekern as sk
from sparsekern.models.minilm import load_minilm, tokenize
from sparsekern.auto.signature import call
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
model, tok = load_minilm(); model.eval()
x1 = tokenize(tok, ["The quick brown fox jumps over the lazy dog near the river bank today."])[0]
plan = {"0.attention.self.key": .6, "2.attention.output.dense": .67, "3.attention.output.dense": .63,
        "3.output.dense": .69, "4.attention.output.dense": .63, "5.attention.self.query": .81}
names = {f"encoder.encoder.layer.{k}": v for k, v in plan.items()}
sparse = copy.deepcopy(model)
with torch.no_grad():
    for n, sp in names.items():
        w = sparse.get_submodule(n).weight
        t = w.abs().flatten().kthvalue(int(sp * w.numel())).values
        w.mul_(w.abs() > t)
sk.sparsify(sparse, layout="csc", layers=list(names), max_density=0.5)
print(type(sparse.get_submodule(list(names)[0])).__name__)
with torch.inference_mode():
    for _ in range(20): call(model, x1); call(sparse, x1)
    res = {"dense": [], "sparse": []}
    for r in range(15):
        for k, m in (("dense", model), ("sparse", sparse)):
            t0 = time.perf_counter()
            for _ in range(10): call(m, x1)
            res[k].append((time.perf_counter() - t0) / 10)
d, s = statistics.median(res["dense"]), statistics.median(res["sparse"])
print(f"threads {torch.get_num_threads()}: dense {d*1e3:.3f} sparse {s*1e3:.3f} speedup {d/s:.3f}  (dense q1-q3 {statistics.quantiles(res['dense'])[0]*1e3:.2f}-{statistics.quantiles(res['dense'])[2]*1e3:.2f}, sparse {statistics.quantiles(res['sparse'])[0]*1e3:.2f}-{statistics.quantiles(res['sparse'])[2]*1e3:.2f})")
