import json, os, subprocess, sys, statistics
trees = sys.argv[1].split(","); reps = int(sys.argv[2]); script = sys.argv[3]
out = {t: [] for t in trees}
for r in range(reps):
    for t in (trees if r % 2 == 0 else trees[::-1]):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env["TREE"] = t
        p = subprocess.run([sys.executable, script] + sys.argv[4:], env=env, capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if not line: print(t, "FAILED", p.stderr[-1500:]); continue
        out[t].append(json.loads(line[0])); print(t, "rep", r, "done", flush=True)
keys = list(out[trees[0]][0])
for k in keys:
    print(k.ljust(14), "  ".join(f"{os.path.basename(t)} {statistics.median(d[k] for d in out[t]):.2f} [{min(d[k] for d in out[t]):.2f}-{max(d[k] for d in out[t]):.2f}]" for t in trees))
json.dump(out, open(os.environ.get("AB_OUT", "/tmp/prof/ab.json"), "w"), indent=1)
