"""ratios.txt / times.txt of this folder: `python summarize.py [ratios|times] RUNS_DIR`
(RUNS_DIR holds one <build>-<pool>-<round>/cpu-contention.json per run)."""
import glob
import json
import sys

what, root = sys.argv[1], sys.argv[2]
rows = {}
for f in sorted(glob.glob(f"{root}/*/cpu-contention.json")):
    tag = f.split("/")[-2]
    for c in json.load(open(f))["contention"]["cases"]:
        for n, r in c["candidates"].items():
            if n in ("2:4", "bsr32x32 90%", "csc 90%"):
                rows.setdefault((c["shape"], c["N"], n), {})[tag] = r
tags = sorted({t for v in rows.values() for t in v})
print("case".ljust(28), " ".join(t.rjust(13) for t in tags))
for k, v in rows.items():
    if what == "ratios":
        cells = [f"{v[t]['loaded_over_quiet']:13.2f}" if t in v else " " * 13 for t in tags]
    else:
        cells = [(f"{v[t]['quiet_median_s'] * 1e3:5.2f}/{v[t]['loaded_median_s'] * 1e3:<6.2f}"
                  if t in v else "").rjust(13) for t in tags]
    print(f"{k[0]} N={k[1]} {k[2]}".ljust(28), " ".join(cells))
