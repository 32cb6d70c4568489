import torch, time, statistics, os
import sparsekern as sk
from torch import nn
from tests.helpers import random_pattern_weight
torch.set_num_threads(int(os.environ.get("NT", "2")))
def tm(f, reps=30):
    ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
for (M, K) in [(384, 384), (1536, 384), (384, 1536), (768, 768), (4096, 4096)]:
  for N in [1, 2, 4, 8, 16, 31]:
    W = random_pattern_weight(M, K, "2:4", density=0.5)
    lin = nn.Linear(K, M)
    with torch.no_grad(): lin.weight.copy_(W)
    sl = sk.SparseLinear.from_dense(lin, layout="2:4")
    fmt = [sl.values.detach(), sl.indices, sl.offsets]
    G = torch.randn(N, M).t(); X = torch.randn(N, K).t()
    T = lambda: torch.ops.sparsekern._spmm_transposed_cpu(*fmt, M, K, "2:4", G)
    D = lambda: torch.ops.sparsekern._sampled_dot_cpu(*fmt, M, K, "2:4", G, X)
    r = {k: [] for k in ("T old", "T dense", "D old", "D dense")}
    reps = 5 if M * K > 1e7 else 30
    for _ in range(3):
        os.environ["SK_EXP_MINN"] = "32"; T(); D()
        r["T old"].append(tm(T, reps)); r["D old"].append(tm(D, reps))
        os.environ["SK_EXP_MINN"] = "1"; T(); D()
        r["T dense"].append(tm(T, reps)); r["D dense"].append(tm(D, reps))
    m = {k: statistics.median(v) for k, v in r.items()}
    print(f"{M}x{K} N={N}: A.T@G entry-wise {m['T old']:.3f} dense {m['T dense']:.3f} ({m['T old']/m['T dense']:.2f}x) | "
          f"dot entry-wise {m['D old']:.3f} dense {m['D dense']:.3f} ({m['D old']/m['D dense']:.2f}x)", flush=True)
