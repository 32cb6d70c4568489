import os, sys, time, torch, statistics as st, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
op = torch.ops.sparsekern.spmm
MODES = os.environ.get("MODES", "always,auto,never").split(",")
def w24(M, K):
    G = torch.randn(M, K // 4, 4); return G.scatter(-1, G.abs().argsort(-1)[..., :int(os.environ.get("DROP", "2"))], 0.0).reshape(M, K)
def setmode(m):
    os.environ["SPARSEKERN_CPU_PREFETCH"] = m; sk.backends.reload_env()
shapes = [tuple(map(int, s.split("x"))) for s in sys.argv[3].split(",")]
for M, K in shapes:
  base = w24(M, K)
  nw = max(2, int(128e6 // (M*K*2.25)))
  As = [sk.to_sparse(base.roll(i, 0), layout=os.environ.get("LAYOUT", "2:4")).op_args() for i in range(nw)]
  for N in [int(n) for n in sys.argv[2].split(",")]:
    x = torch.randn(N, K).t()
    r = {"always": [], "auto": [], "never": []}
    for rnd in range(int(os.environ.get("ROUNDS", "6"))):
        for m in (MODES if rnd % 2 == 0 else MODES[::-1]):
            setmode(m)
            ts = []
            for rep in range(max(2, 400 // nw)):
                for b in As:
                    t0 = time.perf_counter(); op(*b, x, None); ts.append(time.perf_counter() - t0)
            r[m].append(sorted(ts)[len(ts)//2] * 1e6)
    ratios = sorted(x / y for x, y in zip(r["always"], r["auto"]))
    print(f"cold {M}x{K} N={N} ({nw} weights): always {st.median(r['always']):.1f} auto {st.median(r['auto']):.1f} never {st.median(r['never'] or [0]):.1f} us; always/auto {st.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]", flush=True)
  del As
