import torch, time, sys
import sparsekern as sk
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
torch.manual_seed(0)
for M in (512, 4096):
    W = torch.randn(M, M); g = W.view(M, M//4, 4); keep = torch.zeros_like(g, dtype=torch.bool); keep.scatter_(2, g.abs().topk(2, -1).indices, True); W = (g*keep).view(M, M)
    A = to_sparse(W, layout="2:4"); x = torch.randn(1, M)
    with torch.no_grad():
        for name, fn in (("sk", lambda: linear(x, A)), ("dense", lambda: torch.nn.functional.linear(x, W))):
            for _ in range(3): fn()
            ts = []
            for _ in range(30):
                t0 = time.perf_counter(); fn(); ts.append((time.perf_counter()-t0)*1e3)
            ts.sort(); print(M, name, "threads", torch.get_num_threads(), "median %.3f ms min %.3f max %.3f" % (ts[15], ts[0], ts[-1]))
print(torch.ops.sparsekern._cpu_pool())
