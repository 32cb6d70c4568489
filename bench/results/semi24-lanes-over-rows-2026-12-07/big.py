"""2:4 spmm at big shapes: median of 30 warm calls (ms) per N; JSON."""
import sys, time, json, torch, sparsekern as sk
torch.set_num_threads(2); torch.manual_seed(0)
shapes = [(4096, 4096), (3072, 768), (768, 3072), (11008, 4096), (4096, 11008)]
Ns = [int(x) for x in sys.argv[1].split(",")]
res = {}
for (M, K) in shapes:
    G = torch.randn(M, K // 4, 4)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    A = sk.to_sparse(W, layout="2:4"); a = A.op_args(); del W, G
    for N in Ns:
        x = torch.randn(N, K).t()
        for _ in range(3): torch.ops.sparsekern.spmm(*a, x, None)
        ts = []
        for _ in range(30):
            t0 = time.perf_counter(); torch.ops.sparsekern.spmm(*a, x, None); ts.append(time.perf_counter() - t0)
        res[f"{M}x{K} N={N}"] = round(sorted(ts)[15] * 1e3, 4)
print(json.dumps(res))
