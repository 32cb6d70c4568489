"""2:4 spmm at MiniLM's shapes: warm (one layer back to back, median of 200 calls) and in
turn (the 36 layers of 6 blocks called one after the other, as in the model: median of 30).
python layers.py THREADS N1,N2,... [float32|bfloat16|float16]; prints JSON per N."""
import sys, time, json, torch, sparsekern as sk
threads = int(sys.argv[1]); Ns = [int(x) for x in sys.argv[2].split(",")]
DT = getattr(torch, sys.argv[3]) if len(sys.argv) > 3 else torch.float32
torch.set_num_threads(threads); torch.manual_seed(0)
shapes = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]
def mk(M, K):
    G = torch.randn(M, K // 4, 4)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    return sk.to_sparse(W.to(DT), layout="2:4")
layers = [mk(*shapes[i % 6]) for i in range(36)]
op = torch.ops.sparsekern.spmm
res = {}
for N in Ns:
    xs = {K: torch.randn(N, K) for K in (384, 1536)}
    args = [(A.op_args(), xs[A.shape[1]].t()) for A in layers]
    for _ in range(3):
        for a, x in args: op(*a, x, None)
    t_turn = []
    for _ in range(30):
        t0 = time.perf_counter()
        for a, x in args: op(*a, x, None)
        t_turn.append(time.perf_counter() - t0)
    warm = {}
    for i in (0, 4, 5):
        a, x = args[i]
        for _ in range(20): op(*a, x, None)
        ts = []
        for _ in range(200):
            t0 = time.perf_counter(); op(*a, x, None); ts.append(time.perf_counter() - t0)
        warm["x".join(map(str, layers[i].shape))] = sorted(ts)[len(ts) // 2] * 1e6
    res[N] = {"turn_ms": sorted(t_turn)[15] * 1e3, "warm_us": warm}
print(json.dumps(res))
