import os, sys, time, statistics, copy, torch
sys.path.insert(0, "/work/wt-csc"); sys.path.insert(0, "/work/wt-csc/bench")
import sparsekern as sk
from e2e_peers import pruned_copy, make_inputs
from sparsekern.models.minilm import load_minilm
torch.set_num_threads(2)
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
for V, lay in (("90% unstructured", "csc"), ("90% 32x32 blocks", "bsr"), ("2:4", "2:4")):
    pr = pruned_copy(dense, V).to(torch.bfloat16)
    sp = sk.sparsify(copy.deepcopy(pr), layout=lay)
    for B, T in ((1, 16), (32, 64)):
        ids, mask = make_inputs(B, T)
        with torch.inference_mode():
            a, b = pr(ids, mask), sp(ids, mask)
            cos = torch.nn.functional.cosine_similarity(a.float(), b.float()).min().item()
            f32 = pruned_copy(dense, V)(ids, mask)
            cos32 = torch.nn.functional.cosine_similarity(f32, b.float()).min().item()
            ts = {"dense bf16": [], "sparse bf16": []}
            n = 20 if B == 1 else 2
            for _ in range(5):
                for k, m in (("dense bf16", pr), ("sparse bf16", sp)):
                    t0 = time.perf_counter()
                    for _ in range(n): m(ids, mask)
                    ts[k].append((time.perf_counter() - t0) / n * 1e3)
        print(V, f"{B}x{T}", "min cos sparse-vs-dense bf16", round(cos, 5), "vs fp32", round(cos32, 5), {k: round(statistics.median(v), 2) for k, v in ts.items()}, flush=True)
