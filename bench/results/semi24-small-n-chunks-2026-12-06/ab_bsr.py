"""In-process A/B for BSR 32x32 at N columns: SK_EXP_SMALLN=0 (the panels) vs =16 (the
small-N kernel in chunks of <= 8 columns). Needs the experiment patch.
Run: PYTHONPATH=. NS=9,10,11,12,16 python ab_bsr.py"""
import os, time, statistics as st, torch, sparsekern as sk
torch.set_num_threads(int(os.environ.get("TH", 2))); torch.manual_seed(0)
SH = [(384, 384, .9), (1536, 384, .9), (384, 1536, .9), (768, 3072, .7), (768, 3072, .9), (4096, 4096, .9)]
NS = [int(v) for v in os.environ.get("NS", "9,10,11,12,13,16").split(",")]
for M, K, sp in SH:
    mask = (torch.rand(M // 32, K // 32) >= sp).repeat_interleave(32, 0).repeat_interleave(32, 1)
    W = torch.randn(M, K) * mask; A = sk.to_sparse(W, layout="bsr", blocksize=(32, 32)); b = torch.randn(M)
    for N in NS:
        x = torch.randn(N, K)
        ref = torch.nn.functional.linear(x, W, b)
        res = {"0": [], "16": []}
        for blk in range(6):
            for sw in (("0", "16") if blk % 2 == 0 else ("16", "0")):
                os.environ["SK_EXP_SMALLN"] = sw
                y = sk.spmm(A, x.t()).t() + b
                err = (y - ref).abs().max().item()
                assert err < 1e-3 * (1 + ref.abs().max().item()), (M, K, N, sw, err)
                for _ in range(3): sk.spmm(A, x.t())
                ts = []
                for _ in range(30):
                    a = time.perf_counter(); sk.spmm(A, x.t()); ts.append(time.perf_counter() - a)
                res[sw].append(st.median(ts))
        p, c = st.median(res["0"]) * 1e6, st.median(res["16"]) * 1e6
        rat = sorted(a / b for a, b in zip(res["0"], res["16"]))
        print(f"{M}x{K} {sp:.0%} N={N}: panel {p:.1f} us  chunked {c:.1f} us  panel/chunked {p/c:.2f} [{rat[0]:.2f}-{rat[-1]:.2f}]", flush=True)
