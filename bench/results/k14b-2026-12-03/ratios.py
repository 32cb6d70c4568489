"""Prints the per-round old/new ratio (median [q1, q3]) of every piece of a measure.py JSON."""
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    ab = r.get("ab_ratio", {})
    print(f'{r["kind"]:5s} {r["M"]}x{r["K"]} N={r["N"]:5d} {r["variant"]:9s} ' + " ".join(
        f'{n}={v["median"]:.2f}[{v["q1"]:.2f},{v["q3"]:.2f}]' for n, v in ab.items()))
