"""2:4 at N=8..12: chunked small-N kernel (SK_EXP_SMALLN=11, as built) vs the panel (SK_EXP_SMALLN=N-1)."""
import os, torch, time, statistics as st, sys
os.environ["SK_EXP_SMALLN"] = "11"
import sparsekern as sk
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(int(sys.argv[1]))
Ns = [int(v) for v in sys.argv[2].split(",")]
dt = getattr(torch, sys.argv[3]) if len(sys.argv) > 3 else torch.float32
def tm(f, n):
    f(); t = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - t) / n
for N in Ns:
    for (M, K) in [(384, 384), (1536, 384), (384, 1536), (4096, 4096)]:
        W = torch.randn(M, K); x = torch.randn(N, K).to(dt)
        A = to_sparse(magnitude.prune(W, "2:4", 0.5, None).to(dt), layout="2:4")
        n = max(3, int(0.015 / (M * K * N / 2 / 16 / 1.5e9 + 5e-6)))
        arms = {"chunked": "11", "panel": str(N - 1)}
        acc = {k: [] for k in arms}
        with torch.inference_mode():
            outs = {}
            for k, v in arms.items():
                os.environ["SK_EXP_SMALLN"] = v; outs[k] = linear(x, A)
            torch.testing.assert_close(outs["chunked"], outs["panel"], rtol=1e-3 if dt == torch.float32 else 2e-2, atol=1e-3 if dt == torch.float32 else 0.5)
            for r in range(10):
                for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                    os.environ["SK_EXP_SMALLN"] = arms[k]; acc[k].append(tm(lambda: linear(x, A), n))
        a, b = st.median(acc["chunked"]), st.median(acc["panel"])
        print(f"N={N} {M}x{K} {dt}: chunked {a*1e3:.4f} ms panel {b*1e3:.4f} ms: panel {a/b:.3f}x [{min(x/b for x in acc['chunked']):.2f}-{max(x/b for x in acc['chunked']):.2f}]", flush=True)
