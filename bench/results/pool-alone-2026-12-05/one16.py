import os, statistics, sys, time, torch
T = os.environ["TREE"]; sys.path.insert(0, T); sys.path.insert(0, "/work/main/bench")
import sparsekern as sk
from e2e_peers import pruned_copy, make_inputs, VARIANTS
from sparsekern.models.minilm import load_minilm
torch.set_num_threads(2)
variant = sys.argv[1]; comp = sys.argv[2] == "compile"
layout = VARIANTS[variant][2]
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
m = sk.sparsify(pruned_copy(dense, variant), layout=layout)
if comp: m = torch.compile(m)
ids, mask = make_inputs(1, 16)
with torch.inference_mode():
    for _ in range(5): m(ids, mask)
    ts = []
    for _ in range(200):
        t0 = time.perf_counter(); m(ids, mask); ts.append((time.perf_counter() - t0) * 1e3)
print(variant, sys.argv[2], "1x16 median", round(statistics.median(ts), 2), file=sys.stderr)
