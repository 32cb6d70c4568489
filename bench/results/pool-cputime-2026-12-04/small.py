import json, sys, time, statistics, torch
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(2)
tag = sys.argv[1]
g = torch.Generator().manual_seed(0)
import os
for (M, K) in [tuple(map(int, t.split("x"))) for t in os.environ.get("SHAPES", "1024x1024,1536x384,384x1536,2048x2048").split(",")]:
    W = torch.randn(M, K, generator=g)
    for name, layout, bs, sp in (("2:4", "2:4", None, 0.5), ("csc90", "csc", None, 0.9), ("bsr90", "bsr", (32, 32), 0.9)):
        A = to_sparse(magnitude.prune(W, layout, sp, bs), layout=layout, blocksize=bs)
        for N in (1, 8):
            x = torch.randn(N, K, generator=g)
            for _ in range(50): linear(x, A)
            ts = []
            for _ in range(300):
                t = time.perf_counter(); linear(x, A); ts.append(time.perf_counter() - t)
            print(json.dumps({"tag": tag, "case": f"{M}x{K} {name} N={N}", "ms": statistics.median(ts) * 1e3}), flush=True)
