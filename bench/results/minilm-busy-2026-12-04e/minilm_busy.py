# Real MiniLM, 2:4 and CSC 90% (magnitude) sparsified, against the same masked weights run dense;
# quiet then with one core busy; max |diff| and medians.
import copy, time, statistics, subprocess, sys, torch
import sparsekern as sk
from sparsekern.models.minilm import load_minilm, tokenize
from sparsekern.bench import magnitude
torch.set_num_threads(2)
model, tok = load_minilm(); model.eval()
texts = ["The quick brown fox jumps over the lazy dog.", "Sparse kernels make pruned models run faster on real machines."] * 16
b1 = tokenize(tok, texts[:1], batch_size=1)[0]; b32 = tokenize(tok, texts, batch_size=32)[0]
for layout, sp in (("2:4", 0.5), ("csc", 0.9)):
    masked = copy.deepcopy(model)
    for name, m in masked.named_modules():
        if isinstance(m, torch.nn.Linear) and "encoder" in name:
            m.weight.data = magnitude.prune(m.weight.data, layout, sp, None)
    sparse = sk.sparsify(copy.deepcopy(masked), layout=layout)
    for phase in ("quiet", "busy"):
        p = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if phase == "busy" else None
        try:
            with torch.inference_mode():
                for bname, b in (("1", b1), ("32", b32)):
                    ref = masked(**b); out = sparse(**b)
                    err = (out - ref).abs().max().item()
                    ts = {"dense": [], "sparse": []}
                    for _ in range(15):
                        for k, mdl in (("dense", masked), ("sparse", sparse)):
                            t = time.perf_counter(); mdl(**b); ts[k].append(time.perf_counter() - t)
                    d, s = statistics.median(ts["dense"]) * 1e3, statistics.median(ts["sparse"]) * 1e3
                    print(f"{layout:4s} {phase:5s} {bname:>2s} sentences: max|sparse-dense| {err:.2e}  dense {d:7.2f} ms  sparse {s:7.2f} ms  {d/s:.2f}x", flush=True)
        finally:
            if p: p.kill()
