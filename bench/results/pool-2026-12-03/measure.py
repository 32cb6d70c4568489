"""A/B of the kernels' thread team: their own pool vs torch's intra-op pool (SPARSEKERN_CPU_POOL=auto vs own),
switched inside one process (sparsekern.backends.reload_env) and interleaved round by round.

    python bench/results/pool-2026-12-03/measure.py [--threads 2] [--rounds 5] [--calls 20]

Cases: the pretrained all-MiniLM-L6-v2 encoder with all 36 Linear layers magnitude-pruned and
converted (csc 90%, bsr 32x32 90%, 2:4), at 1 sentence x 16 tokens and 32 x 64 tokens;
dense (torch eager, same process) for the speedup. Median over all calls of a case; the
spread is the lowest and highest round median. Prints a Markdown table.
"""
import argparse, copy, os, statistics, time
import torch
import sparsekern as sk
from sparsekern import prune
from sparsekern.backends import reload_env
from sparsekern.models.minilm import load_minilm

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--calls", type=int, default=20)
a = ap.parse_args()
torch.set_num_threads(a.threads)
enc, tok = load_minilm()
enc.eval()
text = "Return the file descriptor for the underlying file, or raise an error if closed."
ex = {"1x16": {k: v[:, :16] for k, v in tok([text], return_tensors="pt", padding="max_length",
                                              max_length=16, truncation=True).items()},
      "32x64": {k: v for k, v in tok([text] * 32, return_tensors="pt", padding="max_length",
                                     max_length=64, truncation=True).items()}}
models = {"dense": enc}
for name, (ratio, gran, layout, kw) in {"csc90": (0.9, "fine", "csc", {}),
                                        "bsr90": (0.9, "32x32", "bsr", {"blocksize": (32, 32)}),
                                        "2:4": (0.5, "2:4", "2:4", {})}.items():
    m = copy.deepcopy(enc)
    prune.prune_model(m.encoder, ratio, gran)
    models[name] = sk.sparsify(m, layout=layout, **kw)

def set_pool(p):
    if p == "torch":
        os.environ["SPARSEKERN_CPU_POOL"] = "auto"
    else:
        os.environ["SPARSEKERN_CPU_POOL"] = "own"
    reload_env()

times = {}
with torch.inference_mode():
    for m in models.values():
        for x in ex.values():
            m(**x)
    for r in range(a.rounds):
        for pool in (("own", "torch") if r % 2 == 0 else ("torch", "own")):
            set_pool(pool)
            for mname, m in models.items():
                for xname, x in ex.items():
                    m(**x)
                    ts = []
                    for _ in range(a.calls):
                        t0 = time.perf_counter(); m(**x); ts.append(time.perf_counter() - t0)
                    times.setdefault((mname, xname, pool), []).append(ts)
set_pool("own")

def fig(key):
    allc = [t for ts in times[key] for t in ts]
    rm = [statistics.median(ts) for ts in times[key]]
    return statistics.median(allc) * 1e3, min(rm) * 1e3, max(rm) * 1e3

print(f"{a.threads} threads, {a.rounds} rounds x {a.calls} calls, torch {torch.__version__}\n")
print("| model | shape | own pool ms | torch pool ms | own/torch | speedup vs dense (own) | (torch) |")
print("|---|---|---|---|---|---|---|")
for mname in models:
    for xname in ex:
        o, t = fig((mname, xname, "own")), fig((mname, xname, "torch"))
        do, dt = fig(("dense", xname, "own")), fig(("dense", xname, "torch"))
        print(f"| {mname} | {xname} | {o[0]:.2f} [{o[1]:.2f}, {o[2]:.2f}] | {t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}] "
              f"| {o[0] / t[0]:.2f} | {do[0] / o[0]:.2f}x | {dt[0] / t[0]:.2f}x |")
