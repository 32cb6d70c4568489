import time, statistics, torch, sys
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
for sp in (0.9,):
    W = torch.randn(4096, 4096, generator=g)
    A = to_sparse(magnitude.prune(W, "csc", sp, None), layout="csc")
    x = torch.randn(1, 4096, generator=g)
    for _ in range(20): linear(x, A)
    ts=[]
    for _ in range(200):
        t=time.perf_counter(); linear(x, A); ts.append(time.perf_counter()-t)
    med=statistics.median(ts); nnz=A.op_args()[0].numel()
    print(f"threads {sys.argv[1]} sp {sp} warm {med*1e3:.3f} ms  {med*4.5e9*int(sys.argv[1])/nnz:.2f} cycles/nnz@4.5GHz")
