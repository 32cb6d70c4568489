import json, glob, os
rows = {}
for f in sorted(glob.glob("/tmp/ab/*/cpu-contention.json")):
    tag = f.split("/")[3]
    d = json.load(open(f))
    for c in d["contention"]["cases"]:
        for n, r in c["candidates"].items():
            if n in ("2:4", "bsr32x32 90%", "csc 90%"):
                rows.setdefault((c["shape"], c["N"], n), {})[tag] = r["loaded_over_quiet"]
tags = sorted({t for v in rows.values() for t in v})
print("case".ljust(28), " ".join(t.rjust(11) for t in tags))
for k, v in rows.items():
    print(f"{k[0]} N={k[1]} {k[2]}".ljust(28), " ".join(f"{v.get(t, float('nan')):11.2f}" for t in tags))
