# One process per OpenMP wait setting; each measures quiet and loaded (one busy process pinned to
# CPU 1) in alternation: MiniLM dense / csc 90%, eager and compiled, at 1x16 and 32x64.
import json, os, statistics, subprocess, sys, time
CONFIGS = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
           "spin1e3": {"GOMP_SPINCOUNT": "1000"}, "spin1e4": {"GOMP_SPINCOUNT": "10000"},
           "spin1e5": {"GOMP_SPINCOUNT": "100000"}}
if len(sys.argv) > 1 and sys.argv[1] == "child":
    import torch
    T = "/work/main"; sys.path.insert(0, T); sys.path.insert(0, T + "/bench")
    import sparsekern as sk
    from e2e_peers import pruned_copy, make_inputs
    from sparsekern.models.minilm import load_minilm
    torch.set_num_threads(int(os.environ.get("AB_THREADS", "2")))
    dense = load_minilm(); dense = dense[0] if isinstance(dense, tuple) else dense; dense.eval()
    csc = sk.sparsify(pruned_copy(dense, "90% unstructured"), layout="csc")
    models = {"dense eager": dense, "csc eager": csc}
    if os.environ.get("AB_COMPILE", "1") == "1":
        models.update({"dense compile": torch.compile(dense), "csc compile": torch.compile(csc)})
    shapes = {"1x16": (1, 16, 30), "32x64": (32, 64, 3)}
    res = {}
    with torch.inference_mode():
        for b, t, _ in shapes.values():
            ids, mask = make_inputs(b, t)
            for m in models.values():
                for _ in range(3): m(ids, mask)
        for rnd in range(3):
            for phase in ("quiet", "loaded"):
                busy = None
                if phase == "loaded":
                    busy = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
                    time.sleep(0.3)
                for sname, (b, t, calls) in shapes.items():
                    ids, mask = make_inputs(b, t)
                    for name, m in models.items():
                        for _ in range(calls):
                            t0 = time.perf_counter(); m(ids, mask)
                            res.setdefault(f"{sname}|{name}|{phase}", []).append((time.perf_counter() - t0) * 1e3)
                if busy: busy.kill(); busy.wait(); time.sleep(0.3)
    print(json.dumps({k: statistics.median(v) for k, v in res.items()}))
    sys.exit(0)
out = {}
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2
only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
if only: CONFIGS = {k: v for k, v in CONFIGS.items() if k in only}
names = list(CONFIGS)
for r in range(reps):
    order = names[r % len(names):] + names[:r % len(names)]
    for c in order:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env.update(CONFIGS[c])
        p = subprocess.run([sys.executable, __file__, "child"], env=env, capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if not line:
            print(c, "FAILED", p.stderr[-2000:]); continue
        out.setdefault(c, []).append(json.loads(line[0]))
        print(c, "rep", r, "done", time.strftime("%H:%M:%S"), flush=True)
json.dump(out, open(os.environ.get("AB_OUT", "/tmp/prof/omp_ab.json"), "w"), indent=1)
keys = list(next(iter(out.values()))[0])
cases = sorted({k.rsplit("|", 1)[0] for k in keys})
print("median ms (per-rep medians, then median of reps); quiet / loaded / loaded:quiet")
for case in cases:
    row = [case.ljust(22)]
    for c in names:
        if c not in out: continue
        q = statistics.median(d[case + "|quiet"] for d in out[c]); l = statistics.median(d[case + "|loaded"] for d in out[c])
        row.append(f"{c}: {q:.1f}/{l:.1f}/x{l/q:.2f}")
    print("  ".join(row))
