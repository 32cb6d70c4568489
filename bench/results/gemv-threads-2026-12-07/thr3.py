import os, sys, time, torch, statistics as st, sparsekern as sk
torch.manual_seed(0)
op = torch.ops.sparsekern.spmm
cold = sys.argv[1] == "cold"
def w24(M, K):
    G = torch.randn(M, K // 4, 4); return G.scatter(-1, G.abs().argsort(-1)[..., :int(os.environ.get("DROP", "2"))], 0.0).reshape(M, K)
for spec in sys.argv[2].split(","):
    M, K = map(int, spec.split("x"))
    base = w24(M, K)
    nw = max(2, int(128e6 // (M*K*2.25))) if cold else 1
    As = [sk.to_sparse(base.roll(i, 0), layout=os.environ.get("LAYOUT", "2:4")).op_args() for i in range(nw)]
    x = torch.randn(int(os.environ.get("N", "1")), K).t()
    r = {1: [], 2: []}
    for rnd in range(8):
        for th in ((1, 2) if rnd % 2 == 0 else (2, 1)):
            torch.set_num_threads(th)
            for _ in range(0 if cold else 30): op(*As[0], x, None)
            ts = []
            for rep in range(max(2, 400 // nw)):
                for b in As:
                    t0 = time.perf_counter(); op(*b, x, None); ts.append(time.perf_counter() - t0)
            r[th].append(sorted(ts)[len(ts)//2] * 1e6)
    ratios = sorted(a / b for a, b in zip(r[1], r[2]))
    print(f"{os.environ.get('LAYOUT', '2:4')} N={os.environ.get('N', '1')} {sys.argv[1]} {M}x{K} (work {M*K//2}): 1t {st.median(r[1]):.1f} 2t {st.median(r[2]):.1f} us; 1t/2t {st.median(ratios):.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}]", flush=True)
    del As
