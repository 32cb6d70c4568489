"""Medians (and ranges) per case of ab.log: before / after, per thread count."""
import json, statistics, sys
rows = {}
for line in open(sys.argv[1] if len(sys.argv) > 1 else "ab.log"):
    parts = line.split(" ", 2)
    if len(parts) < 3 or parts[0] not in ("before", "after"):
        continue
    tag, th, js = parts
    for k, v in json.loads(js).items():
        rows.setdefault((int(th), k), {}).setdefault(tag, []).append(v)
print("| threads | case | before (us) | after (us) | before / after |")
print("|---|---|---|---|---|")
for (th, k), d in sorted(rows.items()):
    a, b = d.get("before", []), d.get("after", [])
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {th} | {k} | {ma:.1f} ({min(a):.0f}-{max(a):.0f}) | {mb:.1f} ({min(b):.0f}-{max(b):.0f}) "
              f"| {ma / mb:.2f} |")
