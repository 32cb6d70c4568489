"""In-process A/B of the CSC panel kernel's register broadcast (SK_NOPERM=1: the old memory
broadcasts), SparseLinear csc, warm, blocks alternating. Experiment build only."""
import os, time, statistics as st, torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("TH", 2)))
def blocks(f, calls):
    res = {"1": [], "0": []}
    with torch.inference_mode():
        for _ in range(8):
            for mode in ("0", "1"):
                os.environ["SK_NOPERM"] = mode
                for _ in range(2): f()
                ts = []
                for _ in range(calls):
                    a = time.perf_counter(); f(); ts.append(time.perf_counter() - a)
                res[mode].append(st.median(ts))
    return res
for dens in (0.1, 0.05):
  for (M, K) in [(384, 384), (1536, 384), (384, 1536)]:
    W = torch.randn(M, K) * (torch.rand(M, K) < dens)
    lin = torch.nn.Linear(K, M); lin.weight.data = W
    s = sk.SparseLinear.from_dense(lin, layout="csc")
    row = []
    for N in (17, 64, 2048):
        x = torch.randn(N, K)
        with torch.inference_mode():
            for mode in ("0", "1"):
                os.environ["SK_NOPERM"] = mode
                e = (s(x).double() - (x.double() @ W.double().t() + lin.bias.double())).abs().max().item()
                assert e < 1e-3, e
        r = blocks(lambda: s(x), 30 if N == 2048 else 100)
        u, f = st.median(r["1"]) * 1e6, st.median(r["0"]) * 1e6
        q = sorted(b / a for a, b in zip(r["0"], r["1"]))
        row.append(f"N={N}: {u:.0f}->{f:.0f}us x{u/f:.2f} [{q[1]:.2f}-{q[-2]:.2f}]")
    print(f"csc {dens} {M}x{K} th={torch.get_num_threads()}", " | ".join(row), flush=True)
