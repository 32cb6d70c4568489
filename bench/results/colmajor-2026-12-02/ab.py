import subprocess, sys, os, statistics, json
CHILD = r'''
import sys, time, statistics, torch, json, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
op = torch.ops.sparsekern.spmm
out = {}
for M,K in [(1536,384),(384,1536),(384,384)]:
    mask = (torch.rand(M//32, K//32) >= 0.9).repeat_interleave(32,0).repeat_interleave(32,1)
    Wb = torch.randn(M,K)*mask
    Wc = torch.randn(M,K)*(torch.rand(M,K)>=0.9)
    Ws = torch.randn(M,K); G = Ws.reshape(M, K//4, 4); Ws = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    for lay, W, kw in (("bsr32", Wb, {"blocksize": (32,32)}), ("csc", Wc, {}), ("2:4", Ws, {})):
        A = sk.to_sparse(W, layout=lay[:3] if lay != "2:4" else lay, **kw); ar = A.op_args()
        for N in (64, 2048):
            B = torch.randn(N,K).t()
            with torch.inference_mode():
                for _ in range(2): op(*ar,B)
                s=[]
                for _ in range(7 if N == 2048 else 50):
                    t=time.perf_counter(); op(*ar,B); s.append(time.perf_counter()-t)
            out[f"{lay} {M}x{K} N={N}"] = statistics.median(s)*1e3
            if lay == "csc":
                with torch.inference_mode():
                    d=[]
                    for _ in range(7 if N == 2048 else 50):
                        t=time.perf_counter(); torch.mm(Wc,B); d.append(time.perf_counter()-t)
                out[f"dense {M}x{K} N={N}"] = statistics.median(d)*1e3
print(json.dumps(out))
'''
a, b, th = sys.argv[1], sys.argv[2], sys.argv[3]
res = {a: [], b: []}
for i in range(3):
    for t in ((a, b) if i % 2 == 0 else (b, a)):
        env = dict(os.environ, PYTHONPATH=t)
        r = subprocess.run([sys.executable, "-c", CHILD, th], env=env, cwd="/tmp", capture_output=True, text=True)
        if r.returncode: raise SystemExit(r.stderr[-2000:])
        res[t].append(json.loads(r.stdout.strip().splitlines()[-1]))
print(f"ms, median of 3 alternating process rounds [min-max], {th} thread(s), A={a} B={b}, load {os.getloadavg()[0]:.2f}")
for k in res[a][0]:
    va = [r[k] for r in res[a]]; vb = [r[k] for r in res[b]]
    print(f"{k:24s} A {statistics.median(va):8.3f} [{min(va):.3f}-{max(va):.3f}]  B {statistics.median(vb):8.3f} [{min(vb):.3f}-{max(vb):.3f}]  A/B {statistics.median(va)/statistics.median(vb):5.2f}x")
