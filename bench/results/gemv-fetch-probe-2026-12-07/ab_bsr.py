import os, sys, time, torch, statistics as st, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
op = torch.ops.sparsekern.spmm
cold = sys.argv[2] == "cold"
def wbsr(M, K, dens, b=32):
    mask = (torch.rand(M // b, K // b) < dens).repeat_interleave(b, 0).repeat_interleave(b, 1)
    return torch.randn(M, K) * mask
def setmode(m):
    os.environ["SPARSEKERN_CPU_PREFETCH"] = m; sk.backends.reload_env()
for spec in sys.argv[3].split(","):
    shp, dens = spec.split("@"); M, K = map(int, shp.split("x")); dens = float(dens)
    base = wbsr(M, K, dens)
    nbytes = M * K * dens * 4
    nw = max(2, int(128e6 // nbytes)) if cold else 1
    As = [sk.to_sparse(base.roll(32 * i, 0), layout="bsr", blocksize=(32, 32)).op_args() for i in range(nw)]
    x = torch.randn(1, K).t()
    r = {"always": [], "auto": []}
    for rnd in range(8):
        for m in (("always", "auto") if rnd % 2 == 0 else ("auto", "always")):
            setmode(m)
            ts = []
            reps = max(2, 400 // nw)
            for _ in range(20 if not cold else 0): op(*As[0], x, None)
            for rep in range(reps):
                for b in As:
                    t0 = time.perf_counter(); op(*b, x, None); ts.append(time.perf_counter() - t0)
            r[m].append(sorted(ts)[len(ts)//2] * 1e6)
    ratios = sorted(a / b for a, b in zip(r["always"], r["auto"]))
    print(f"{sys.argv[2]} bsr32 {M}x{K} density {dens} ({nw} weights, {sys.argv[1]} threads): always {st.median(r['always']):.1f} auto {st.median(r['auto']):.1f} us; always/auto {st.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]", flush=True)
    del As
