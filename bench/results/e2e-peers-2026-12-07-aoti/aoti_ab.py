"""The pruned MiniLM under torch.compile against the same model through torch.export +
AOTInductor, alternating blocks of calls (order reversed every other round).
LAYOUT=2:4|csc|bsr|dense SHAPE=1x16|32x64 ROUNDS=8 python aoti_ab.py"""
import copy, os, sys, tempfile, time, statistics, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
torch.set_num_threads(2)
layout = os.environ.get("LAYOUT", "2:4")
B, T = (int(x) for x in os.environ.get("SHAPE", "1x16").split("x"))
dense, _ = load_minilm()
m = copy.deepcopy(dense)
if layout != "dense":
    prune_model(m, None if layout == "2:4" else 0.9, granularity={"2:4":"2:4","csc":"fine","bsr":(32,32)}[layout], criterion="l1")
    m = sk.sparsify(m, layout=layout)
m.encoder.set_attn_implementation("eager")
m.eval()
ids = (torch.arange(B*T) * 7919 % 29000 + 1000).reshape(B, T); mask = torch.ones(B, T, dtype=torch.int64)
t0 = time.time()
with torch.inference_mode():
    want = m(ids, mask)
ep = torch.export.export(m, (ids, mask))
path = torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(tempfile.mkdtemp(), "m.pt2"))
runner = torch._inductor.aoti_load_package(path)
print("aoti build s", round(time.time() - t0, 1), flush=True)
c = torch.compile(copy.deepcopy(m))
with torch.inference_mode():
    got = runner(ids, mask); got2 = c(ids, mask)
print("diff aoti", (got - want).abs().max().item(), "diff compile", (got2 - want).abs().max().item())
variants = {"compile": c, "aoti": runner}
res = {k: [] for k in variants}
calls = 20 if B*T <= 64 else 3
names = list(variants)
for r in range(int(os.environ.get("ROUNDS", 8))):
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
        f = variants[n]
        with torch.inference_mode():
            f(ids, mask); f(ids, mask)
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter(); f(ids, mask); ts.append(time.perf_counter() - t0)
        res[n].append(statistics.median(ts) * 1e3)
for n in names:
    print(f"{n:14s} median {statistics.median(res[n]):.3f} ms  rounds {min(res[n]):.3f}-{max(res[n]):.3f}")
