import os, sys, time, statistics, copy, torch
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/bench")
import sparsekern as sk
from e2e_peers import pruned_copy, make_inputs
from sparsekern.models.minilm import load_minilm
torch.set_num_threads(2)
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
models = {"dense bf16": torch.compile(copy.deepcopy(dense).to(torch.bfloat16))}
for V, lay in (("90% unstructured", "csc"), ("90% 32x32 blocks", "bsr"), ("2:4", "2:4")):
    models[f"{lay} bf16"] = torch.compile(sk.sparsify(pruned_copy(dense, V).to(torch.bfloat16), layout=lay))
for B, T in ((1, 16), (32, 64)):
    ids, mask = make_inputs(B, T)
    n = 20 if B == 1 else 2
    ts = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(3): m(ids, mask)
        for _ in range(5):
            for k, m in models.items():
                t0 = time.perf_counter()
                for _ in range(n): m(ids, mask)
                ts[k].append((time.perf_counter() - t0) / n * 1e3)
    print(f"{B}x{T}", {k: f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for k, v in ts.items()}, flush=True)
