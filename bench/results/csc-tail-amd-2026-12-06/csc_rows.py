# CSC N=17, by entries per row: SWITCH=SK_UNFUSED (default; "1" = no tail split) or
# SWITCH=SK_CSC_ALWAYS ("1" = main's always-split rule), old -> new. Experiment build only.
import os, time, statistics as st, torch, sparsekern as sk
SWITCH = os.environ.get("SWITCH", "SK_UNFUSED")
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("TH", 2)))
N = int(os.environ.get("N", 17))
def blocks(s, x):
    res = {"1": [], "0": []}
    with torch.inference_mode():
        for _ in range(10):
            for mode in ("0", "1"):
                os.environ[SWITCH] = mode
                for _ in range(10): s(x)
                ts = []
                for _ in range(100):
                    a = time.perf_counter(); s(x); ts.append(time.perf_counter() - a)
                res[mode].append(st.median(ts))
    return res
for (M, K, dens) in [(384, 384, 0.1), (384, 384, 0.2), (384, 384, 0.3), (768, 768, 0.1), (3072, 768, 0.1), (768, 3072, 0.1), (1536, 384, 0.25), (384, 1536, 0.05), (1024, 1024, 0.1)]:
    W = torch.randn(M, K) * (torch.rand(M, K) < dens)
    lin = torch.nn.Linear(K, M); lin.weight.data = W
    s = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(1, N, K)
    r = blocks(s, x)
    u, f = st.median(r["1"]) * 1e6, st.median(r["0"]) * 1e6
    q = sorted(b / a for a, b in zip(r["0"], r["1"]))
    print(f"{M}x{K} d={dens} rows~{K*dens:.0f}: {u:.1f}->{f:.1f}us x{u/f:.2f} [{q[2]:.2f}-{q[-3]:.2f}]", flush=True)
