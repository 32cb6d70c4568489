import torch, time, sys
import sparsekern as sk
from tests.helpers import random_pattern_weight
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
M, K, N = [int(v) for v in sys.argv[1:4]]
W = random_pattern_weight(M, K, "2:4", density=0.5)
sl = sk.SparseLinear.from_dense(torch.nn.Linear(K, M).requires_grad_(False).__class__(K, M), layout="2:4") if False else None
lin = torch.nn.Linear(K, M)
with torch.no_grad(): lin.weight.copy_(W)
sl = sk.SparseLinear.from_dense(lin, layout="2:4")
G = torch.randn(N, M).t()
fmt = [sl.values.detach(), sl.indices, sl.offsets]
for _ in range(2): torch.ops.sparsekern._spmm_transposed_cpu(*fmt, M, K, "2:4", G)
t = time.perf_counter(); n = 0
while time.perf_counter() - t < 6:
    torch.ops.sparsekern._spmm_transposed_cpu(*fmt, M, K, "2:4", G); n += 1
print((time.perf_counter() - t) / n * 1e3, "ms")
