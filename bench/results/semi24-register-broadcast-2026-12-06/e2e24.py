"""MiniLM 2:4 (l1) at 1x16 and 32x64, torch.compile, SPARSEKERN_CPU_BROADCAST load vs register,
beside ONNX Runtime's dense model, one process, interleaved blocks."""
import os, sys, time, statistics as st, copy, importlib.util, tempfile
from pathlib import Path
import torch
sys.path.insert(0, "bench"); import e2e_peers as E
import sparsekern as sk
torch.set_num_threads(2)
torch._dynamo.config.cache_size_limit = 64
dense, _ = E.load_minilm(); dense.eval()
m = E.pruned_copy(dense, "2:4"); sk.sparsify(m, layout="2:4")
mc = torch.compile(m)
onnx = E.export_onnx(dense, Path(tempfile.mkdtemp()) / "d.onnx")
def setb(v): os.environ["SPARSEKERN_CPU_BROADCAST"] = v; sk.backends.reload_env()
for (b, t), calls, rounds in (((1, 16), 20, 12), ((32, 64), 3, 6)):
    ort = E.ort_call(onnx, b, t, 2)
    f = E.torch_call(mc, b, t)
    arms = {"2:4 load": lambda: (setb("load"), f())[1], "2:4 register": lambda: (setb("register"), f())[1], "ORT dense": ort}
    want = ort()
    for k, fn in arms.items():
        for _ in range(3): out = fn()
        print(k, "max diff vs ORT dense", abs(out - want).max())
    acc = {k: [] for k in arms}
    for r in range(rounds):
        for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            fn = arms[k]
            fn(); fn()
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
            acc[k].append(st.median(ts) * 1e3)
    for k, v in acc.items():
        print(f"{b}x{t} {k}: median of round medians {st.median(v):.2f} ms [{min(v):.2f}-{max(v):.2f}]", flush=True)
