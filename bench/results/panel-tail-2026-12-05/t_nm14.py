"""1:4 (75% sparse) at 16-33 columns: MiniLM's layer shapes, inference mode, µs."""
import json, sys, time, torch, sparsekern as sk
from sparsekern import prune
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
def t(f, x, n=300):
    for _ in range(20): f(x)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n): f(x)
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(ts)[2]
out = {}
for (o, i) in [(384, 384), (1536, 384), (384, 1536)]:
    m = torch.nn.Sequential(torch.nn.Linear(i, o)); prune.prune_model(m, None, "1:4")
    s = sk.sparsify(m, layout="1:4")
    for N in [16, 17, 18, 19, 33]:
        with torch.inference_mode():
            out[f"1:4 {o}x{i} N={N}"] = t(s, torch.randn(N, i))
print(json.dumps(out))
