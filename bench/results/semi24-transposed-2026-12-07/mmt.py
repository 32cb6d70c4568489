import torch, time, statistics
torch.set_num_threads(2)
def tm(f, reps=10):
    f(); ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
for (M, K) in [(4096, 4096), (1536, 384), (768, 768)]:
    W = torch.randn(M, K)
    for N in [1, 2, 4, 8, 16, 31, 64]:
        G = torch.randn(N, M).t()
        a = tm(lambda: torch.mm(W.t(), G))
        b = tm(lambda: torch.mm(G.t(), W).t().contiguous())
        Gc = G.contiguous()
        c = tm(lambda: torch.mm(W.t(), Gc))
        print(f"{M}x{K} N={N}: mm(W.t(),G) {a:.3f}  mm(G.t(),W).t().contig {b:.3f}  mm(W.t(), G contiguous) {c:.3f}", flush=True)
