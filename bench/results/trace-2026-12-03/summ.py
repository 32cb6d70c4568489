import json, statistics, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    print(f"== pool {d['pool']} {d['shape']}² N={d['N']}")
    names = list(d["phases"][0]["calls"])
    for n in names:
        q = [t for p in d["phases"] if not p["loaded"] for t in p["calls"][n]["ms"]]
        l = [t for p in d["phases"] if p["loaded"] for t in p["calls"][n]["ms"]]
        qm, lm = statistics.median(q), statistics.median(l)
        slow = [t for t in l if t > 2 * qm]
        per_phase = [round(statistics.median(p["calls"][n]["ms"]), 3) for p in d["phases"] if p["loaded"]]
        print(f"  {n:16s} quiet {qm:7.3f}  loaded {lm:7.3f} ({lm/qm:4.2f}x)  slow(>2x quiet) {len(slow)}/{len(l)}  loaded phase medians {per_phase}")
