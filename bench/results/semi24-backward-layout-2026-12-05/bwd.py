import os, sys, time, statistics, torch
sys.path.insert(0, os.environ["TREE"])
import sparsekern as sk
torch.set_num_threads(2); torch.manual_seed(0)
out = []
for (M, K, N) in ((1536, 384, 2048), (384, 1536, 2048), (4096, 4096, 512)):
    lin = torch.nn.Linear(K, M)
    with torch.no_grad():
        g = lin.weight.reshape(M, K // 4, 4); idx = g.abs().topk(2, -1).indices
        lin.weight.copy_((g * torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)).reshape(M, K))
    layer = sk.SparseLinear.from_dense(lin, layout="2:4")
    x = torch.randn(N, K, requires_grad=True)
    def step():
        y = layer(x); y.backward(torch.ones_like(y))
    for _ in range(3): step()
    ts = []
    for _ in range(9):
        t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
    out.append(f"{M}x{K} N={N}: {statistics.median(ts)*1e3:.2f} ms (min {min(ts)*1e3:.2f})")
print(os.path.basename(os.environ["TREE"]), " | ".join(out))
