import torch, time, statistics, os, sys
import sparsekern as sk
from torch import nn
from tests.helpers import random_pattern_weight
torch.set_num_threads(int(os.environ.get("NT", "2")))
def tm(f, reps):
    ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
shapes = [tuple(int(v) for v in s.split("x")) for s in os.environ["SHAPES"].split(",")]
for (M, K, N) in shapes:
    lin = nn.Linear(K, M)
    with torch.no_grad():
        lin.weight.copy_(random_pattern_weight(M, K, "2:4", density=0.5))
    sl = sk.SparseLinear.from_dense(lin, layout="2:4")
    x = torch.randn(N, K, requires_grad=True); g = torch.randn(N, M)
    A = sl
    args = None
    G = g.t(); X = x.detach().t()  # [M, N], [K, N] column-major as autograd passes
    fmt = [sl.values.detach(), sl.indices, sl.offsets]
    def opT():
        return torch.ops.sparsekern._sampled_dot_cpu(*fmt, M, K, "2:4", G, X)
    def _unused():
        return torch.ops.sparsekern._spmm_transposed_cpu(*fmt, M, K, "2:4", G)
    def step(m):
        y = m(x); y.backward(g)
    reps = 5 if M * K * N > 1e9 else 15
    res = {"op new": [], "op dense": [], "step new": [], "step dense": [], "nn.Linear": []}
    for _ in range(3): opT(); step(sl); step(lin)
    for r in range(4):
        os.environ.pop("SK_EXP_D24", None)
        res["op new"].append(tm(opT, reps)); res["step new"].append(tm(lambda: step(sl), reps))
        os.environ["SK_EXP_D24"] = "1"
        res["op dense"].append(tm(opT, reps)); res["step dense"].append(tm(lambda: step(sl), reps))
        os.environ.pop("SK_EXP_D24", None)
        res["nn.Linear"].append(tm(lambda: step(lin), reps))
    med = {k: statistics.median(v) for k, v in res.items()}
    rng = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in res.items()}
    print(f"{M}x{K} N={N}: dot new {med['op new']:.2f} [{rng['op new']}] dense {med['op dense']:.2f} [{rng['op dense']}] x{med['op dense']/med['op new']:.2f} | "
          f"step new {med['step new']:.2f} [{rng['step new']}] old {med['step dense']:.2f} [{rng['step dense']}] nn.Linear {med['nn.Linear']:.2f} [{rng['nn.Linear']}] -> {med['nn.Linear']/med['step new']:.2f}x (was {med['nn.Linear']/med['step dense']:.2f}x)", flush=True)
