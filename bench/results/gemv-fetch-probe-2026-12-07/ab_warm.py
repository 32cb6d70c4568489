import os, sys, time, torch, statistics as st, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
op = torch.ops.sparsekern.spmm
def w24(M, K):
    G = torch.randn(M, K // 4, 4); return G.scatter(-1, G.abs().argsort(-1)[..., :int(os.environ.get("DROP", "2"))], 0.0).reshape(M, K)
def setmode(m):
    os.environ["SPARSEKERN_CPU_PREFETCH"] = m; sk.backends.reload_env()
shapes = [(384,384),(1536,384),(384,1536),(768,3072),(3072,768),(1024,4096)]
for M, K in shapes:
  for N in [int(n) for n in sys.argv[2].split(",")]:
    A = sk.to_sparse(w24(M, K), layout=os.environ.get("LAYOUT", "2:4")); a = A.op_args(); x = torch.randn(N, K).t()
    n = 400 if M*K < 2e6 else 100
    r = {"always": [], "auto": [], "never": []}
    for rnd in range(8):
        for m in (("always", "auto", "never") if rnd % 2 == 0 else ("never", "auto", "always")):
            setmode(m)
            for _ in range(20): op(*a, x, None)
            ts = []
            for _ in range(n):
                t0 = time.perf_counter(); op(*a, x, None); ts.append(time.perf_counter() - t0)
            r[m].append(sorted(ts)[n//2] * 1e6)
    ratios = sorted(x / y for x, y in zip(r["always"], r["auto"]))
    print(f"{M}x{K} N={N}: always {st.median(r['always']):.1f} auto {st.median(r['auto']):.1f} never {st.median(r['never']):.1f} us; always/auto {st.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]", flush=True)
