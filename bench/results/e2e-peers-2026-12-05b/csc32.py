import os, sys, time, statistics, copy, torch
T = os.environ["TREE"]; sys.path.insert(0, T); sys.path.insert(0, T + "/bench")
import sparsekern as sk
from e2e_peers import pruned_copy, make_inputs
from sparsekern.models.minilm import load_minilm
torch.set_num_threads(2)
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
sp = sk.sparsify(pruned_copy(dense, "90% unstructured"), layout="csc")
ids, mask = make_inputs(32, 64)
with torch.inference_mode():
    for _ in range(2): sp(ids, mask)
    ts = []
    for _ in range(8):
        t0 = time.perf_counter(); sp(ids, mask); ts.append((time.perf_counter() - t0) * 1e3)
print(os.path.basename(T), "csc eager 32x64 median", round(statistics.median(ts), 1), "min", round(min(ts), 1))
