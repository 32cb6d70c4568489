import time, statistics, torch, sys
sys.path.insert(0, __import__("os").environ.get("TREE", "/work/wt-csc"))
import sparsekern as sk
torch.set_num_threads(2)
def tm(f, n=30):
    for _ in range(3): f()
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n): f()
        ts.append((time.perf_counter() - t0) / n)
    return statistics.median(ts) * 1e3
for lay in ("2:4", "csc", "bsr"):
    W = torch.randn(4096, 4096)
    if lay == "2:4":
        g = W.reshape(4096, 1024, 4); idx = g.abs().topk(2, -1).indices
        W = (g * torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)).reshape(4096, 4096)
    elif lay == "csc": W[torch.rand_like(W) < 0.9] = 0
    else:
        m = (torch.rand(128, 128) < 0.1).repeat_interleave(32, 0).repeat_interleave(32, 1); W = W * m
    lin = torch.nn.Linear(4096, 4096, bias=False); lin.weight.data = W.clone()
    for N in (1, 16):
        x = torch.randn(N, 4096)
        l16 = torch.nn.Linear(4096, 4096, bias=False).to(torch.bfloat16); l16.weight.data = W.to(torch.bfloat16)
        s16 = sk.SparseLinear.from_dense(l16, layout=lay)
        s32w16 = s16  # bf16 weight with fp32 input
        with torch.inference_mode():
            r = {"dense bf16": tm(lambda: l16(x.bfloat16())), "sparse bf16xbf16": tm(lambda: s16(x.bfloat16())),
                 "sparse bf16 w x fp32": tm(lambda: s16(x)), "dense fp32": tm(lambda: lin(x))}
        print(lay, N, {k: round(v, 3) for k, v in r.items()})
