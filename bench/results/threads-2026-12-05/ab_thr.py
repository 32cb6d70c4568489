# A/B of the op at 2 threads (csc, small N), two trees in alternating subprocesses.
import json, os, statistics, subprocess, sys
CHILD = r'''
import os, sys, time, statistics, torch, json
sys.path.insert(0, os.environ["TREE"])
import sparsekern as sk
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)
out = {}
with torch.inference_mode():
    for (M, K) in [(256, 256), (384, 384), (512, 512), (768, 384), (1536, 384), (384, 1536), (1024, 1024)]:
        W = torch.randn(M, K) * (torch.rand(M, K) >= 0.9)
        A = sk.to_sparse(W, layout="csc")
        for N in (4, 16, 32, 64):
            x = torch.randn(N, K)
            f = lambda: sk.spmm(A, x.t())
            for _ in range(30): f()
            ts = []
            for _ in range(300):
                t0 = time.perf_counter_ns(); f(); ts.append(time.perf_counter_ns() - t0)
            out[f"{M}x{K} N={N}"] = statistics.median(ts) / 1e3
print(json.dumps(out))
'''
trees = sys.argv[1:3]; rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
res = {t: [] for t in trees}
for r in range(rounds):
    for t in trees:
        p = subprocess.run([sys.executable, "-c", CHILD], env=dict(os.environ, TREE=t), capture_output=True, text=True)
        res[t].append(json.loads(p.stdout.strip().splitlines()[-1]))
keys = list(res[trees[0]][0])
print(f"{'case':22} {'A us':>14} {'B us':>14}  B/A   (A={trees[0]}, B={trees[1]}, {rounds} rounds, median [min-max])")
for k in keys:
    a = [x[k] for x in res[trees[0]]]; b = [x[k] for x in res[trees[1]]]
    print(f"{k:22} {statistics.median(a):6.1f} [{min(a):.0f}-{max(a):.0f}] {statistics.median(b):6.1f} [{min(b):.0f}-{max(b):.0f}]  {statistics.median(b)/statistics.median(a):.2f}")
