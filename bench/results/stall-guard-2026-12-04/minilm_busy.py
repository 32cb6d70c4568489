import copy, statistics, time, torch, sys, subprocess
import sparsekern as sk
from sparsekern import prune
from sparsekern.models.minilm import load_minilm
torch.manual_seed(0)
model, tok = load_minilm()
sparse = copy.deepcopy(model)
prune.prune_model(sparse, granularity="2:4")
sparse = sk.sparsify(sparse, layout="2:4")
b1 = tok(["A sparse kernel skips the zeros and runs faster."], return_tensors="pt")
b32 = tok(["Sentence number %d about sparse kernels, pruning and speed." % i for i in range(32)], padding=True, return_tensors="pt")
def med(m, b, n=15):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); m(**b); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3
with torch.inference_mode():
    for m in (model, sparse):
        med(m, b1, 3); med(m, b32, 2)
    for phase in ("quiet", "busy", "quiet", "busy"):
        p = subprocess.Popen(["sh", "-c", "while :; do :; done"]) if phase == "busy" else None
        time.sleep(0.3)
        r = {f"{n} {lab}": med(m, b) for lab, b in (("1x", b1), ("32x", b32)) for n, m in (("dense", model), ("2:4", sparse))}
        if p: p.kill(); p.wait()
        print(phase, {k: round(v, 2) for k, v in r.items()},
              "speedup 1x %.2f 32x %.2f" % (r["dense 1x"] / r["2:4 1x"], r["dense 32x"] / r["2:4 32x"]), flush=True)
