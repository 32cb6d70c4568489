"""A/B of SPARSEKERN_CPU_BROADCAST=load vs register in one process, alternating blocks."""
import os, torch, time, statistics as st, sys
import sparsekern as sk
from sparsekern.formats import to_sparse
from sparsekern.functional import linear
from sparsekern.bench import magnitude
torch.set_num_threads(int(sys.argv[1]))
Ns = [int(v) for v in sys.argv[2].split(",")]
layout = sys.argv[3]
dt = getattr(torch, sys.argv[4]) if len(sys.argv) > 4 else torch.float32
sp, bs = {"2:4": (0.5, None), "csc": (0.9, None), "bsr": (0.9, (32, 32)), "1:4": (0.75, None)}[layout]
shapes = [(384, 384), (1536, 384), (384, 1536), (4096, 4096)]
def tm(f, n):
    f(); t = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - t) / n
def setb(v):
    os.environ["SPARSEKERN_CPU_BROADCAST"] = v; sk.backends.reload_env()
for N in Ns:
    for (M, K) in shapes:
        if M * K * N > 4096 * 4096 * 128: continue
        W = torch.randn(M, K); x = torch.randn(N, K).to(dt)
        A = to_sparse(magnitude.prune(W, layout, sp, bs).to(dt), layout=layout, blocksize=bs)
        n = max(3, int(0.015 / (M * K * N * (1 - sp) / 16 / 1.5e9 + 5e-6)))
        acc = {"load": [], "register": []}
        with torch.inference_mode():
            outs = {}
            for v in acc:
                setb(v); outs[v] = linear(x, A)
            assert torch.equal(outs["load"], outs["register"])
            for r in range(10):
                for v in (["load", "register"] if r % 2 == 0 else ["register", "load"]):
                    setb(v); acc[v].append(tm(lambda: linear(x, A), n))
        a, b = st.median(acc["load"]), st.median(acc["register"])
        lo = min(x / b for x in acc["load"]); hi = max(x / b for x in acc["load"])
        print(f"{layout} {dt} N={N} {M}x{K}: load {a*1e3:.4f} ms, register {b*1e3:.4f} ms: "
              f"{a/b:.3f}x [{lo:.2f}-{hi:.2f}]", flush=True)
