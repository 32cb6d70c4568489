import sys, runpy

exec(open("attn.py").read())
from torch.profiler import profile, ProfilerActivity
with torch.inference_mode():
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(3): cm(ids, mask)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
