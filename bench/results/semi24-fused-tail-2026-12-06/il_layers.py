"""In-process A/B of the tail-column split, one SparseLinear per shape, blocks of 100 calls
alternating between the old behaviour and the fused tail through an experiment-only switch
(not in main): SWITCH=SK_UNFUSED (the AVX-512 runs; "1" = old) or SWITCH=SK_AVX2_TAIL (the
AVX2 runs, with SPARSEKERN_CPU_ISA=avx2; "0" = old).

Usage: [SWITCH=...] [LAYS="2:4 csc bsr 1:4"] [BS=32] [NS="16 17 18 19 33"] [TH=2] python il_layers.py
Prints per layout and shape: old -> fused median us, ratio [3rd lowest - 3rd highest block].
"""
import os, time, statistics as st, torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("TH", 2)))
NS = [int(v) for v in os.environ.get("NS", "16 17 18 19 33").split()]
SWITCH = os.environ.get("SWITCH", "SK_UNFUSED")
OLD, NEW = ("1", "0") if SWITCH == "SK_UNFUSED" else ("0", "1")
BS = int(os.environ.get("BS", 32))


def make(lay, M, K):
    W = torch.randn(M, K)
    if lay in ("2:4", "1:4"):
        G = W.reshape(M, K // 4, 4)
        W = G.scatter(-1, G.abs().argsort(-1)[..., :4 - int(lay[0])], 0.0).reshape(M, K)
    elif lay == "bsr":
        W = W * (torch.rand(M // BS, K // BS) < 0.1).repeat_interleave(BS, 0).repeat_interleave(BS, 1)
    else:
        W = W * (torch.rand(M, K) < 0.1)
    lin = torch.nn.Linear(K, M); lin.weight.data = W
    kw = {"blocksize": (BS, BS)} if lay == "bsr" else {}
    return sk.SparseLinear.from_dense(lin, layout=lay, **kw), W, lin.bias


def blocks(s, x):
    res = {OLD: [], NEW: []}
    with torch.inference_mode():
        for _ in range(10):
            for mode in (NEW, OLD):
                os.environ[SWITCH] = mode
                for _ in range(10): s(x)
                ts = []
                for _ in range(100):
                    a = time.perf_counter(); s(x); ts.append(time.perf_counter() - a)
                res[mode].append(st.median(ts))
    return res


for lay in os.environ.get("LAYS", "2:4").split():
    for (M, K) in [(384, 384), (1536, 384), (384, 1536)]:
        s, W, bias = make(lay, M, K)
        row = []
        for N in NS:
            x = torch.randn(1, N, K)
            for mode in (OLD, NEW):  # both right before timing
                os.environ[SWITCH] = mode
                with torch.inference_mode():
                    e = (s(x).double() - (x.double() @ W.double().t() + bias.double())).abs().max().item()
                assert e < 1e-3, (lay, M, K, N, mode, e)
            res = blocks(s, x)
            u, f = st.median(res[OLD]) * 1e6, st.median(res[NEW]) * 1e6
            r = sorted(b / a for a, b in zip(res[NEW], res[OLD]))
            row.append(f"N={N}: {u:.1f}->{f:.1f}us x{u/f:.2f} [{r[2]:.2f}-{r[-3]:.2f}]")
        print(f"{lay} {M}x{K} th={torch.get_num_threads()}", " | ".join(row), flush=True)
