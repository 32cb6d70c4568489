"""The 2:4 all-MiniLM-L6-v2 (magnitude, all 36 encoder Linear layers, sk.sparsify(layout="2:4"))
under torch.compile with Hugging Face's "eager" attention, as bench/e2e_peers.py compiles it:
median ms per forward over 300 calls at 1x16 and 4x16 tokens (bench/e2e_peers.py's token ids),
2 threads. Imports sparsekern from PYTHONPATH (an A/B of two builds)."""
import copy, time, warnings
import torch
warnings.filterwarnings("ignore")
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model

torch.set_num_threads(2)
dense, _ = load_minilm()
m = copy.deepcopy(dense)
prune_model(m, 0.5, granularity="2:4", criterion="l1")
m = sk.sparsify(m, layout="2:4")
m.encoder.set_attn_implementation("eager")
cm = torch.compile(m)
out = [sk.__file__.split("/sparsekern/")[0]]
with torch.inference_mode():
    for b, t in [(1, 16), (4, 16)]:
        ids = (torch.arange(b * t, dtype=torch.int64) * 7919 % 29000 + 1000).reshape(b, t)
        mask = torch.ones(b, t, dtype=torch.int64)
        for _ in range(20):
            cm(ids, mask)
        ts = []
        for _ in range(300):
            a = time.perf_counter_ns()
            cm(ids, mask)
            ts.append(time.perf_counter_ns() - a)
        ts.sort()
        out.append(f"{b}x{t} {ts[150] / 1e6:.3f} ms [{ts[75] / 1e6:.3f}-{ts[225] / 1e6:.3f}]")
print(" | ".join(out))
