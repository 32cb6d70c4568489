# The model with every encoder Linear at 90% (magnitude) in CSC: time it against dense, and
# sum its layers as the table would (cold and llc contexts) + other warm.
import sys, copy, torch, statistics, time
import sparsekern as sk
from sparsekern.models.minilm import load_minilm, tokenize
from sparsekern.auto.measure import time_jobs
from sparsekern.auto.table import stubbed_copy
from sparsekern.auto.signature import call
from sparsekern.demo.minilm_job import JOB_TIMER
torch.set_num_threads(2)
layout = sys.argv[1] if len(sys.argv) > 1 else "csc"
sp = float(sys.argv[2]) if len(sys.argv) > 2 else 0.9
model, tok = load_minilm(); model.eval()
texts = ["The quick brown fox jumps over the lazy dog near the river bank today."]
x1 = tokenize(tok, texts)[0]
names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in n]
sparse = copy.deepcopy(model)
with torch.no_grad():
    for n in names:
        w = sparse.get_submodule(n).weight
        if layout == "2:4":
            g = w.abs().reshape(w.shape[0], -1, 4)
            keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(2, dim=2).indices, True)
            w.mul_(keep.reshape(w.shape))
        else:
            t = w.abs().flatten().kthvalue(int(sp * w.numel())).values
            w.mul_(w.abs() > t)
sk.sparsify(sparse, layout=layout, layers=names)
inputs = {}
hs = [sparse.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: (inputs.setdefault(n, a[0].detach().clone()), None)[1]) for n in names]
with torch.inference_mode(): call(sparse, x1)
for h in hs: h.remove()
other = stubbed_copy(model, x1, names)
jobs = {"dense": (lambda x: call(model, x), x1), "sparse": (lambda x: call(sparse, x), x1),
        "other": (lambda x: call(other, x), x1)}
for n in names: jobs["L:" + n] = (sparse.get_submodule(n), inputs[n])
for rep in range(2):
    w = time_jobs({k: jobs[k] for k in ("dense", "sparse", "other")}, torch.device("cpu"), JOB_TIMER, "warm")
    line = f"{layout} {sp}: warm model dense {w['dense']['median_s']*1e3:.3f} sparse {w['sparse']['median_s']*1e3:.3f} (x{w['dense']['median_s']/w['sparse']['median_s']:.2f}) other {w['other']['median_s']*1e3:.3f} |"
    for ctx in ("warm", "llc", "cold"):
        r = time_jobs({k: v for k, v in jobs.items() if k.startswith("L:")}, torch.device("cpu"), JOB_TIMER, ctx)
        lay = sum(v["median_s"] for v in r.values())
        line += f" {ctx}: layers {lay*1e3:.3f} pred {(lay + w['other']['median_s'])*1e3:.3f}"
    print(line, flush=True)
