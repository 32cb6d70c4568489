"""In-process A/B: CSC 90% SparseLinear, the tail columns fused into the panel work (default) vs
run after it (SK_UNFUSED=1, an experiment-only switch), blocks of 100 calls alternating."""
import os, sys, time, statistics as st, torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("TH", 2)))
NS = [int(v) for v in os.environ.get("NS", "16 17 18 19 33").split()]
for (M, K) in [(384, 384), (1536, 384), (384, 1536)]:
    W = torch.randn(M, K) * (torch.rand(M, K) < 0.1)
    lin = torch.nn.Linear(K, M); lin.weight.data = W
    s = sk.SparseLinear.from_dense(lin, layout="csc")
    row = []
    for N in NS:
        x = torch.randn(1, N, K)
        res = {"0": [], "1": []}
        with torch.inference_mode():
            for rep in range(12):
                for mode in ("0", "1"):
                    os.environ["SK_UNFUSED"] = mode
                    for _ in range(10): s(x)
                    ts = []
                    for _ in range(100):
                        a = time.perf_counter(); s(x); ts.append(time.perf_counter() - a)
                    res[mode].append(st.median(ts))
        f, u = st.median(res["0"]) * 1e6, st.median(res["1"]) * 1e6
        ratios = sorted(b / a for a, b in zip(res["0"], res["1"]))
        row.append(f"N={N}: {u:.1f}->{f:.1f}us x{u/f:.2f} [{ratios[2]:.2f}-{ratios[-3]:.2f}]")
    print(f"{M}x{K} th={torch.get_num_threads()}", " | ".join(row), flush=True)
