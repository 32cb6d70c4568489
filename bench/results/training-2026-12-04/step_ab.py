import time, torch, statistics, sys
import sparsekern as sk
from torch import nn
from tests.helpers import random_pattern_weight
torch.set_num_threads(2)
def t(f, reps=9):
    f(); ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
layouts = sys.argv[1].split(",")
for (M, K, N) in [(1536, 384, 512), (1536, 384, 2048), (4096, 4096, 512)]:
    for layout in layouts:
        lin = nn.Linear(K, M)
        with torch.no_grad():
            lin.weight.copy_(random_pattern_weight(M, K, layout, density=0.1 if layout != "2:4" else 0.5, blocksize=(32, 32)))
        sl = sk.SparseLinear.from_dense(lin, layout=layout, blocksize=(32, 32) if layout == "bsr" else None)
        x = torch.randn(N, K, requires_grad=True)
        g = torch.randn(N, M)
        def step(m):
            y = m(x); y.backward(g)
        ts, td = t(lambda: step(sl)), t(lambda: step(lin))
        print(f"{M}x{K} N={N} {layout}: fwd+bwd sparse {ts:.2f} dense {td:.2f} -> {td/ts:.2f}x", flush=True)
