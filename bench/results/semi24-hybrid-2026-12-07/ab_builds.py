"""Two builds of sparsekern (two checkouts, each with its _C built) timed in alternating
processes: per round, each build in turn (order reversed every other round) times the 2:4 op
on every shape, median of a block of calls; the figure per build is the median over rounds,
with the spread of the per-round ratio.

    python ab_builds.py OLD_ROOT NEW_ROOT [ROUNDS]     (env: THREADS=2, NS=128,512,2048,
    SHAPES=384x384,1536x384,384x1536,3072x768,4096x4096,11008x4096)

Each weight is a random 2:4 pattern (the 2 largest of every 4), B = randn(N, K).t() (as
nn.Linear passes it), fp32, warm (the same weight called back to back)."""
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, os, sys, time, statistics, torch
sys.path.insert(0, sys.argv[1])
import sparsekern as sk
torch.set_num_threads(int(os.environ.get("THREADS", 2)))
out = {}
torch.manual_seed(0)
for N in [int(v) for v in os.environ["NS"].split(",")]:
    for s in os.environ["SHAPES"].split(","):
        M, K = (int(a) for a in s.split("x"))
        G = torch.randn(M, K // 4, 4)
        W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
        A = sk.to_sparse(W, layout="2:4")
        B = torch.randn(N, K).t()
        args = A.op_args()
        f = lambda: torch.ops.sparsekern.spmm(*args, B)
        f(); f()
        reps = max(5, min(200, int(2e9 / (M * K * N))))
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        out[f"{M}x{K} N={N}"] = statistics.median(ts)
print(json.dumps(out))
'''


def main():
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    env = dict(os.environ)
    env.setdefault("NS", "128,512,2048")
    env.setdefault("SHAPES", "384x384,1536x384,384x1536,3072x768")
    res = {"old": [], "new": []}
    for r in range(rounds):
        order = [("old", old), ("new", new)]
        if r % 2:
            order.reverse()
        for name, root in order:
            p = subprocess.run([sys.executable, "-c", CHILD, root], env=env, capture_output=True,
                               text=True, check=True)
            res[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
    for key in res["old"][0]:
        o = [x[key] for x in res["old"]]
        n = [x[key] for x in res["new"]]
        ratios = sorted(a / b for a, b in zip(o, n))
        print(f"{key:22s} old {statistics.median(o)*1e3:8.3f} ms  new {statistics.median(n)*1e3:8.3f} ms"
              f"  old/new {statistics.median(o)/statistics.median(n):.2f}x"
              f" [{ratios[0]:.2f}-{ratios[-1]:.2f}]", flush=True)


if __name__ == "__main__":
    main()
