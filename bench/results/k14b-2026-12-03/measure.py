"""Interleaved timings of SparseLinear vs nn.Linear (forward, forward+backward) and of the
sparse pieces, for one or several builds of sparsekern (A/B: one worker process per build,
rounds alternate between builds and between dense and sparse inside a build).

    python bench/results/k14b-2026-12-03/measure.py [--builds name=DIR ...] [--threads 2]
        [--rounds 9] [--cases fwd,fb,split] [--quick] > out.json

Each DIR holds a `sparsekern` package (its own _C). Figures: per-call seconds, median and
quartiles over rounds; the speedup is dense median / sparse median of the same worker.
"""
import argparse, json, math, os, subprocess, sys, time

SHAPES = [(384, 384), (1536, 384), (384, 1536), (4096, 4096)]
TOKENS = [1, 64, 512, 2048]
VARIANTS = [("2:4", "2:4", None, 0.5), ("bsr32x32", "bsr", (32, 32), 0.9), ("csc", "csc", None, 0.9)]


def worker(threads):
    import torch
    from torch import nn
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    from sparsekern.nn import SparseLinear
    from sparsekern.bench import magnitude
    from sparsekern.timing.machine import extension_isa
    ops = torch.ops.sparsekern
    cache = {}

    def build(key):
        kind, M, K, N, vname = key
        v = [x for x in VARIANTS if x[0] == vname][0]
        _, layout, bs, sp = v
        gen = torch.Generator().manual_seed(0)
        lin = nn.Linear(K, M)
        with torch.no_grad():
            W = torch.randn(M, K, generator=gen) / K ** 0.5
            lin.weight.copy_(magnitude.prune(W, layout, sp, bs))
        sl = SparseLinear.from_dense(lin, layout, bs)
        x = torch.randn(N, K, generator=gen)
        g = torch.randn(N, M, generator=gen)
        xg = x.clone().requires_grad_(True)
        vals, idx, off = sl.values.detach(), sl.indices, sl.offsets
        lay = sl.layout
        gt = g.t()                 # dY of the op: [M, N] column-major
        gc = gt.contiguous()       # what the autograd node hands both backward ops
        xt = x.t()

        def step(layer):
            def fn():
                layer.zero_grad(set_to_none=True)
                xg.grad = None
                layer(xg).backward(g)
            return fn

        def fwd(layer):
            def fn():
                with torch.no_grad():
                    layer(x)
            return fn
        c = {}
        if kind == "fwd":
            c = {"dense": fwd(lin), "sparse": fwd(sl)}
        elif kind == "fb":
            c = {"dense": step(lin), "sparse": step(sl)}
        elif kind == "split":
            def sfwd():
                with torch.no_grad():
                    ops.spmm(vals, idx, off, M, K, lay, xt, sl.bias.detach())
            def gcopy():
                gt.contiguous()
            def strans():
                ops.spmm_transposed(vals, idx, off, M, K, lay, gc)
            def sdot():
                ops.spmm_sampled_dot(vals, idx, off, M, K, lay, gc, xt)
            def strans_col():  # dY as the autograd node now hands it (k14b: no copy)
                ops.spmm_transposed(vals, idx, off, M, K, lay, gt)
            def sdot_col():
                ops.spmm_sampled_dot(vals, idx, off, M, K, lay, gt, xt)
            def dfwd():
                with torch.no_grad():
                    F.linear(x, lin.weight, lin.bias)
            def dgx():
                with torch.no_grad():
                    torch.mm(g, lin.weight)
            def dgw():
                with torch.no_grad():
                    torch.mm(g.t(), x)
            c = {"dense_fwd": dfwd, "dense_dX": dgx, "dense_dW": dgw, "sparse_fwd": sfwd,
                 "gcopy": gcopy, "spmm_transposed": strans, "sampled_dot": sdot,
                 "spmm_transposed_colG": strans_col, "sampled_dot_colG": sdot_col}
        inner = {}
        for n, fn in c.items():
            fn(); fn()
            t0 = time.perf_counter(); fn(); t = time.perf_counter() - t0
            inner[n] = max(1, min(200, math.ceil(0.004 / max(t, 1e-7))))
        return c, inner

    print(json.dumps({"isa": extension_isa(), "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        key = tuple(req["key"])
        if key not in cache:
            cache[key] = build(key)
        c, inner = cache[key]
        out = {}
        for n, fn in c.items():
            k = inner[n]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            out[n] = (time.perf_counter() - t0) / k
        print(json.dumps(out), flush=True)


def quart(xs):
    xs = sorted(xs)
    def q(p):
        pos = p * (len(xs) - 1); lo = math.floor(pos); hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return {"median": q(0.5), "q1": q(0.25), "q3": q(0.75), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", nargs="*", default=["cur=."])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cases", default="fwd,fb")
    ap.add_argument("--shapes", default=None, help="MxK,MxK")
    ap.add_argument("--tokens", default=None, help="1,64")
    ap.add_argument("--variants", default=None, help="2:4,csc")
    ap.add_argument("--fb-max-flops", type=float, default=3e10)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--switch-sleep", type=float, default=0.3)
    a = ap.parse_args()
    if a.worker:
        return worker(a.threads)
    shapes = SHAPES if not a.shapes else [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    tokens = TOKENS if not a.tokens else [int(t) for t in a.tokens.split(",")]
    variants = [v[0] for v in VARIANTS] if not a.variants else a.variants.split(",")
    procs = {}
    for b in a.builds:
        name, rest = b.split("=", 1)
        d, *extra = rest.split(",")  # name=DIR[,VAR=VALUE...]: extra environment
        env = dict(os.environ, PYTHONPATH=os.path.abspath(d))
        env.update(e.split("=", 1) for e in extra)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--threads",
                              str(a.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env, cwd="/tmp")
        procs[name] = (p, json.loads(p.stdout.readline()))
    keys = []
    for kind in a.cases.split(","):
        for (M, K) in shapes:
            for N in tokens:
                if kind == "fb" and 6.0 * M * K * N > a.fb_max_flops:
                    continue
                for v in variants:
                    if kind == "fwd" and v != "2:4" and "allfwd" not in a.cases:
                        pass
                    keys.append((kind, M, K, N, v))
    results = []
    for key in keys:
        samples = {}
        for r in range(a.rounds):
            for name, (p, _) in procs.items():
                if len(procs) > 1:
                    # Let the other worker's pool threads stop spinning (OpenMP/MKL keep
                    # spinning after a parallel region and would steal this worker's cores).
                    time.sleep(a.switch_sleep)
                p.stdin.write(json.dumps({"key": key}) + "\n"); p.stdin.flush()
                out = json.loads(p.stdout.readline())
                for n, t in out.items():
                    samples.setdefault(name, {}).setdefault(n, []).append(t)
        rec = {"kind": key[0], "M": key[1], "K": key[2], "N": key[3], "variant": key[4], "builds": {}}
        for name, s in samples.items():
            st = {n: quart(v) for n, v in s.items()}
            b = {"isa": procs[name][1]["isa"], "t": st}
            if "dense" in st:
                b["speedup"] = st["dense"]["median"] / st["sparse"]["median"]
            rec["builds"][name] = b
        if len(samples) == 2:
            n0, n1 = list(samples)
            for piece in samples[n0]:
                ratios = [x / y for x, y in zip(samples[n0][piece], samples[n1][piece])]
                rec.setdefault("ab_ratio", {})[piece] = quart(ratios)  # old / new per round
        results.append(rec)
        line = f"{key[0]:5s} {key[1]}x{key[2]} N={key[3]:5d} {key[4]:9s}"
        for name, b in rec["builds"].items():
            t = b["t"]
            if "speedup" in b:
                line += f" | {name}: dense {t['dense']['median']*1e3:.3f} sparse {t['sparse']['median']*1e3:.3f} ms {b['speedup']:.2f}x"
            else:
                line += f" | {name}: " + " ".join(f"{n}={v['median']*1e3:.3f}" for n, v in t.items())
        print(line, file=sys.stderr, flush=True)
    for p, _ in procs.values():
        p.stdin.close(); p.wait()
    json.dump({"argv": sys.argv, "threads": a.threads, "rounds": a.rounds, "results": results},
              sys.stdout, indent=1)


if __name__ == "__main__":
    main()
