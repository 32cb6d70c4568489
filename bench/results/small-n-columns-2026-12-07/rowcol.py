import time, torch, sparsekern as sk
torch.set_num_threads(2); torch.manual_seed(0)
op = torch.ops.sparsekern.spmm
for (M, K) in [(4096, 4096), (1536, 384), (384, 1536)]:
    G = torch.randn(M, K // 4, 4); W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    a = sk.to_sparse(W, layout="2:4").op_args()
    for N in (16, 64, 128, 512):
        res = {}
        for name, B in (("col", torch.randn(N, K).t()), ("row", torch.randn(K, N))):
            for _ in range(5): op(*a, B, None)
            ts = []
            for _ in range(50):
                t0 = time.perf_counter(); op(*a, B, None); ts.append(time.perf_counter() - t0)
            res[name] = sorted(ts)[25] * 1e3
        print(f"{M}x{K} N={N}: column-major B {res['col']:.3f} ms, row-major B {res['row']:.3f} ms ({res['row']/res['col']:.2f}x)")
