import json, glob
rows = {}
for f in sorted(glob.glob("/tmp/ab/*/cpu-contention.json")):
    tag = f.split("/")[3]
    d = json.load(open(f))
    for c in d["contention"]["cases"]:
        for n, r in c["candidates"].items():
            if n in ("2:4", "bsr32x32 90%", "csc 90%"):
                rows.setdefault((c["shape"], c["N"], n), {})[tag] = (r["quiet_median_s"]*1e3, r["loaded_median_s"]*1e3)
tags = ["old-own-1","old-own-2","new-own-1","new-own-2","old-auto-1","old-auto-2","new-auto-1","new-auto-2"]
print("quiet / loaded ms".ljust(26), " ".join(t.rjust(13) for t in tags))
for k, v in rows.items():
    print(f"{k[0]} N={k[1]} {k[2]}".ljust(26), " ".join(("%5.2f/%-6.2f" % v[t]).rjust(13) for t in tags))
