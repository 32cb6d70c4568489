"""Per-call cost of the public op, two trees side by side (issues 16 and 17: before/after).
Usage: python bench/overhead_ab.py TREE_A TREE_B [rounds] (each TREE a checkout with its _C
built in place). The child's timing loop is self-contained on purpose: it must run on
trees that predate sparsekern.timing. Each round runs one subprocess per tree
(alternating), each printing medians; the report is the median over rounds with the spread."""
import json, os, statistics, subprocess, sys

CHILD = r'''
import json, statistics, sys, time, torch
import sparsekern as sk
torch.manual_seed(0)
out = {}
def med(f, reps):
    for _ in range(5): f()
    s = []
    for _ in range(reps):
        t = time.perf_counter(); f(); s.append(time.perf_counter() - t)
    return statistics.median(s) * 1e6
op = torch.ops.sparsekern.spmm
for th in (1, 2):
    torch.set_num_threads(th)
    with torch.inference_mode():
        for lay in ("csc", "bsr", "2:4"):
            W = torch.randn(64, 64)
            if lay == "2:4":
                G = W.reshape(64, 16, 4); W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(64, 64)
            else:
                W = W * (torch.rand(64, 64) >= 0.9)
            A = sk.to_sparse(W, layout=lay, **({"blocksize": (8, 8)} if lay == "bsr" else {}))
            ar, x = A.op_args(), torch.randn(64, 1)
            out[f"op 64x64 {lay} N=1 th{th}"] = med(lambda: op(*ar, x), 3000)
        for (M, K, N, reps) in ((4096, 4096, 1, 60), (1536, 384, 1, 1000), (1536, 384, 16, 500), (384, 384, 16, 1000), (1536, 384, 64, 300)):
            W = torch.randn(M, K) * (torch.rand(M, K) >= 0.9)
            A = sk.to_sparse(W, layout="csc"); ar = A.op_args(); B = torch.randn(N, K).t()
            out[f"csc90 {M}x{K} N={N} th{th}"] = med(lambda: op(*ar, B), reps)
            out[f"dense {M}x{K} N={N} th{th}"] = med(lambda: torch.mm(W, B), reps)
    W = torch.randn(64, 64) * (torch.rand(64, 64) >= 0.9)
    A, x1 = sk.to_sparse(W, layout="csc"), torch.randn(1, 64)
    with torch.inference_mode():
        out[f"sk.linear 64x64 csc N=1 th{th}"] = med(lambda: sk.linear(x1, A), 3000)
        out[f"torch.mm 64x64 N=1 th{th}"] = med(lambda: torch.mm(W, x1.t()), 3000)
    lin = torch.nn.Linear(64, 64)
    with torch.no_grad():
        lin.weight.mul_((torch.rand(64, 64) >= 0.9).float())
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(4, 64, requires_grad=True)
    out[f"SparseLinear 64 fwd+grad th{th}"] = med(lambda: layer(x), 3000)
print(json.dumps(out))
'''

def run(tree):
    env = dict(os.environ, PYTHONPATH=tree)
    env.pop("OPENBLAS_CORETYPE", None); env.pop("OPENBLAS_L2_SIZE", None)
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=tree, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

a, b = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
res = {a: [], b: []}
for i in range(rounds):
    for t in ((a, b) if i % 2 == 0 else (b, a)):
        res[t].append(run(t))
keys = list(res[a][0])
print(f"median over {rounds} alternating rounds [min-max]; us; A={a} B={b}; load {os.getloadavg()[0]:.2f}")
for k in keys:
    va = [r[k] for r in res[a]]; vb = [r[k] for r in res[b]]
    ma, mb = statistics.median(va), statistics.median(vb)
    print(f"{k:34s} A {ma:9.1f} [{min(va):.0f}-{max(va):.0f}]  B {mb:9.1f} [{min(vb):.0f}-{max(vb):.0f}]  B/A {mb/ma:5.2f}")
