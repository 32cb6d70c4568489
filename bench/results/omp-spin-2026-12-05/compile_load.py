# Compiled vs eager MiniLM (dense and csc 90%) at 32x64 and 1x16, quiet vs one busy process pinned to CPU 1.
import os, sys, time, statistics, subprocess, torch
T = "/work/main"; sys.path.insert(0, T); sys.path.insert(0, T + "/bench")
import sparsekern as sk
from e2e_peers import pruned_copy, make_inputs
from sparsekern.models.minilm import load_minilm
torch.set_num_threads(2)
shape = sys.argv[1] if len(sys.argv) > 1 else "32x64"
B, Tk = (int(v) for v in shape.split("x"))
calls = 4 if B > 1 else 40
dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
csc = sk.sparsify(pruned_copy(dense, "90% unstructured"), layout="csc")
models = {"dense eager": dense, "csc eager": csc,
          "dense compile": torch.compile(dense), "csc compile": torch.compile(csc)}
ids, mask = make_inputs(B, Tk)
res = {}
with torch.inference_mode():
    for m in models.values():
        for _ in range(3): m(ids, mask)
    for rnd in range(3):
        for phase in ("quiet", "loaded"):
            busy = None
            if phase == "loaded":
                busy = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
                time.sleep(0.3)
            for name, m in models.items():
                ts = []
                for _ in range(calls):
                    t0 = time.perf_counter(); m(ids, mask); ts.append((time.perf_counter() - t0) * 1e3)
                res.setdefault((name, phase), []).extend(ts)
            if busy: busy.kill(); busy.wait(); time.sleep(0.3)
print(f"{shape}, 2 threads, pool={os.environ.get('SPARSEKERN_CPU_POOL','auto')}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY','-')}")
for name in models:
    q, l = statistics.median(res[(name, 'quiet')]), statistics.median(res[(name, 'loaded')])
    print(f"  {name:14s} quiet {q:8.2f} ms  loaded {l:8.2f} ms  x{l/q:.2f}")
