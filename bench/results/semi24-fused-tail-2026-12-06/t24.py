import os, sys, time, statistics as st, torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("TH", 2)))
out = []
for (M, K) in [(384, 384), (1536, 384), (384, 1536)]:
    W = torch.randn(M, K); G = W.reshape(M, K // 4, 4)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    lin = torch.nn.Linear(K, M); lin.weight.data = W
    s = sk.SparseLinear.from_dense(lin, layout="2:4")
    for N in (16, 17, 18, 19, 33):
        x = torch.randn(1, N, K)
        with torch.inference_mode():
            for _ in range(20): s(x)
            meds = []
            for _ in range(5):
                ts = []
                for _ in range(200):
                    a = time.perf_counter(); s(x); ts.append(time.perf_counter() - a)
                meds.append(st.median(ts))
        out.append(f"{M}x{K}:{N}={st.median(meds)*1e6:.1f}")
print(sys.argv[1], " ".join(out))
