# quiet A/B worker: python qab.py TAG -> prints json lines of medians (ms)
import json, sys, time, statistics, torch
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(2)
tag = sys.argv[1]
for M in (2048, 4096):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(M, M, generator=g)
    for name, layout, bs, sp in (("csc90", "csc", None, 0.9), ("2:4", "2:4", None, 0.5), ("bsr90", "bsr", (32, 32), 0.9)):
        A = to_sparse(magnitude.prune(W, layout, sp, bs), layout=layout, blocksize=bs)
        for N in (64, 128, 256):
            x = torch.randn(N, M, generator=g)
            for _ in range(3): linear(x, A)
            ts = []
            for _ in range(25):
                t = time.perf_counter(); linear(x, A); ts.append(time.perf_counter() - t)
            print(json.dumps({"tag": tag, "case": f"{M} {name} N={N}", "ms": statistics.median(ts) * 1e3}), flush=True)
