# One process per tree (TREE env): compiled + eager MiniLM csc/bsr/2:4 at 1x16 and 32x64, 2 threads; prints JSON of medians.
import json, os, statistics, sys, time, torch
T = os.environ["TREE"]; sys.path.insert(0, T); sys.path.insert(0, "/work/main/bench")
import sparsekern as sk
assert sk.__file__.startswith(T), sk.__file__
from e2e_peers import pruned_copy, make_inputs, VARIANTS
from sparsekern.models.minilm import load_minilm
torch.set_num_threads(2)
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
models = {"dense": torch.compile(dense)}
for v, (_, _, layout) in VARIANTS.items():
    models[layout] = torch.compile(sk.sparsify(pruned_copy(dense, v), layout=layout))
shapes = {"1x16": (1, 16, 40), "32x64": (32, 64, 4)}
res = {}
with torch.inference_mode():
    for b, t, _ in shapes.values():
        ids, mask = make_inputs(b, t)
        for m in models.values():
            for _ in range(3): m(ids, mask)
    for rnd in range(3):
        for sname, (b, t, calls) in shapes.items():
            ids, mask = make_inputs(b, t)
            for name, m in models.items():
                for _ in range(calls):
                    t0 = time.perf_counter(); m(ids, mask)
                    res.setdefault(f"{sname}|{name}", []).append((time.perf_counter() - t0) * 1e3)
print(json.dumps({k: statistics.median(v) for k, v in res.items()}))
