"""In-process A/B under SPARSEKERN_CPU_ISA=avx2: the 8q + 1 column fused as a GEMV tail
(SK_AVX2_TAIL=1, experiment switch) vs the 8-column panels alone, blocks of 100 calls."""
import os, sys, time, statistics as st, torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("TH", 2)))
NS = [int(v) for v in os.environ.get("NS", "16 17 25 33 41").split()]
def make(lay, M, K):
    W = torch.randn(M, K)
    if lay in ("2:4", "1:4"):
        G = W.reshape(M, K // 4, 4); W = G.scatter(-1, G.abs().argsort(-1)[..., :4 - int(lay[0])], 0.0).reshape(M, K)
    elif lay == "bsr":
        W = W * (torch.rand(M // 32, K // 32) < 0.1).repeat_interleave(32, 0).repeat_interleave(32, 1)
    else:
        W = W * (torch.rand(M, K) < 0.1)
    lin = torch.nn.Linear(K, M); lin.weight.data = W
    return sk.SparseLinear.from_dense(lin, layout=lay, **({"blocksize": (32, 32)} if lay == "bsr" else {})), W, lin.bias
for lay in os.environ.get("LAYS", "2:4 csc bsr 1:4").split():
    for (M, K) in [(384, 384), (1536, 384), (384, 1536)]:
        s, W, bias = make(lay, M, K)
        row = []
        for N in NS:
            x = torch.randn(1, N, K)
            res = {"0": [], "1": []}
            with torch.inference_mode():
                for mode in ("0", "1"):
                    os.environ["SK_AVX2_TAIL"] = mode
                    e = (s(x).double() - (x.double() @ W.double().t() + bias.double())).abs().max().item()
                    assert e < 1e-3, (lay, M, K, N, mode, e)
                for rep in range(10):
                    for mode in ("0", "1"):
                        os.environ["SK_AVX2_TAIL"] = mode
                        for _ in range(10): s(x)
                        ts = []
                        for _ in range(100):
                            a = time.perf_counter(); s(x); ts.append(time.perf_counter() - a)
                        res[mode].append(st.median(ts))
            f, u = st.median(res["1"]) * 1e6, st.median(res["0"]) * 1e6
            r = sorted(b / a for a, b in zip(res["1"], res["0"]))
            row.append(f"N={N}: {u:.0f}->{f:.0f} x{u/f:.2f} [{r[2]:.2f}-{r[-3]:.2f}]")
        print(f"{lay} {M}x{K} th={torch.get_num_threads()}", " | ".join(row), flush=True)
