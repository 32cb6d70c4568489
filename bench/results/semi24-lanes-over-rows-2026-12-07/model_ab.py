"""The compiled 2:4 MiniLM (magnitude) at 1xTOKENS tokens (env TOKENS, default 16), 2 threads:
python model_ab.py plain|freeze (freeze: inductor freezing). Run it with PYTHONPATH set to
each build in alternating processes; the line names the build's folder."""
import copy, sys, time, warnings
import torch
warnings.filterwarnings("ignore")
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
import os
mode = sys.argv[1]
mode = mode + " " + sk.__file__.split("/sparsekern/")[0] + " tokens=" + os.environ.get("TOKENS", "16")
if mode.startswith("freeze"):
    import torch._inductor.config as ic
    ic.freezing = True
torch.set_num_threads(2)
dense, _ = load_minilm()
m = copy.deepcopy(dense); prune_model(m, 0.5, granularity="2:4", criterion="l1"); m = sk.sparsify(m, layout="2:4")
m.encoder.set_attn_implementation("eager")
cm = torch.compile(m)
b, t = 1, int(os.environ.get("TOKENS", "16"))
ids = (torch.arange(b * t, dtype=torch.int64) * 7919 % 29000 + 1000).reshape(b, t); mask = torch.ones(b, t, dtype=torch.int64)
with torch.inference_mode():
    ref = m(ids, mask)
    for _ in range(20): out = cm(ids, mask)
    ts = []
    for _ in range(400):
        a = time.perf_counter_ns(); cm(ids, mask); ts.append(time.perf_counter_ns() - a)
ts.sort()
print(mode, f"{ts[200]/1e6:.3f} ms [{ts[100]/1e6:.3f}-{ts[300]/1e6:.3f}] maxdiff {(out-ref).abs().max().item():.1e}")
