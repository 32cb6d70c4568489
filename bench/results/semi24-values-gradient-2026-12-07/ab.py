import torch, time, statistics, sys
import sparsekern as sk
from torch import nn
from tests.helpers import random_pattern_weight
torch.set_num_threads(2)
M, K, N = [int(v) for v in sys.argv[1:4]]
torch.manual_seed(0)
lin = nn.Linear(K, M)
with torch.no_grad(): lin.weight.copy_(random_pattern_weight(M, K, "2:4", density=0.5))
sl = sk.SparseLinear.from_dense(lin, layout="2:4")
x = torch.randn(N, K, requires_grad=True); g = torch.randn(N, M)
A = sk.to_sparse(lin.weight.detach(), layout="2:4"); args = A.op_args()
Gv = g.t(); B = x.detach().t()
def step(m): m(x).backward(g)
def op(): torch.ops.sparsekern.spmm_sampled_dot(*args, Gv, B)
def tm(f, reps=7):
    f(); ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
a, b, c = [], [], []
for _ in range(3):
    c.append(tm(op)); a.append(tm(lambda: step(sl))); b.append(tm(lambda: step(lin)))
a, b, c = statistics.median(a), statistics.median(b), statistics.median(c)
print(f"{M}x{K} N={N} sampled_dot {c:.2f} ms  step sparse {a:.1f} dense {b:.1f} -> {b/a:.2f}x")
