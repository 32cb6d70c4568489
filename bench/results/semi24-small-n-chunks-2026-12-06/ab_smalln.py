"""In-process A/B for 2:4 at N columns: SK_EXP_SMALLN=0 (the 16-column panel) vs =64 (the
small-N kernel in chunks of <= 8 columns). Needs experiment.patch (this folder) applied to
csrc/cpu/semi24.cpp at its parent commit (the switch is not in the committed code).
Run: PYTHONPATH=. NS=9,10,11,12,13 [TH=2] python ab_smalln.py"""
import os, time, statistics as st, torch, sparsekern as sk
torch.set_num_threads(int(os.environ.get("TH", 2))); torch.manual_seed(0)
SH = [(384, 384), (1536, 384), (384, 1536), (768, 3072), (4096, 4096)]
NS = [int(v) for v in os.environ.get("NS", "9,12,16,17,20,24,32").split(",")]
def mk24(M, K):
    W = torch.randn(M, K); g = W.abs().reshape(M, K // 4, 4)
    idx = g.topk(2, dim=-1).indices; mask = torch.zeros_like(g).scatter_(-1, idx, 1).reshape(M, K)
    return W * mask
for M, K in SH:
    W = mk24(M, K); A = sk.to_sparse(W, layout="2:4"); b = torch.randn(M)
    for N in NS:
        x = torch.randn(N, K)
        ref = torch.nn.functional.linear(x, W, b)
        res = {"0": [], "64": []}
        for blk in range(6):
            for sw in (("0", "64") if blk % 2 == 0 else ("64", "0")):
                os.environ["SK_EXP_SMALLN"] = sw
                y = sk.spmm(A, x.t()).t() + b
                err = (y - ref).abs().max().item()
                assert err < 1e-3 * (1 + ref.abs().max().item()), (M, K, N, sw, err)
                ts = []
                for _ in range(30):
                    a = time.perf_counter(); sk.spmm(A, x.t()); ts.append(time.perf_counter() - a)
                res[sw].append(st.median(ts))
        p, c = st.median(res["0"]) * 1e6, st.median(res["64"]) * 1e6
        rat = sorted(a / b for a, b in zip(res["0"], res["64"]))
        print(f"{M}x{K} N={N}: panel {p:.1f} us  chunked {c:.1f} us  panel/chunked {p/c:.2f} [{rat[0]:.2f}-{rat[-1]:.2f}]", flush=True)
