"""Table of ab.txt: per dtype and N, the old/new medians over rounds (in turn, ms) and the
ratio old/new; warm: the ratio per shape."""
import json, re, statistics, sys
txt = open(sys.argv[1]).read().splitlines()
data = {}
for i, line in enumerate(txt):
    m = re.match(r"round=(\d+) build=(\S+) dtype=(\S+)", line)
    if m:
        build = "old" if "wt-old" in m.group(2) else "new"
        data.setdefault((m.group(3), build), []).append(json.loads(txt[i + 1]))
print("| weights | N | in turn: before ms | after ms | before/after | warm before/after: 384x384 / 1536x384 / 384x1536 |")
print("|---|---|---|---|---|---|")
for dt in ("float32", "bfloat16"):
    old, new = data[(dt, "old")], data[(dt, "new")]
    for N in old[0]:
        o = [r[N]["turn_ms"] for r in old]; n = [r[N]["turn_ms"] for r in new]
        warm = []
        for s in ("384x384", "1536x384", "384x1536"):
            wo = statistics.median(r[N]["warm_us"][s] for r in old)
            wn = statistics.median(r[N]["warm_us"][s] for r in new)
            warm.append(f"{wo / wn:.2f}")
        print(f"| {dt} | {N} | {statistics.median(o):.2f} ({min(o):.2f}-{max(o):.2f}) | "
              f"{statistics.median(n):.2f} ({min(n):.2f}-{max(n):.2f}) | "
              f"{statistics.median(o) / statistics.median(n):.2f} | {' / '.join(warm)} |")
models = {}
for line in txt:
    m = re.match(r"plain (\S+) tokens=(\d+) ([\d.]+) ms", line)
    if m:
        models.setdefault((m.group(2), "old" if "wt-old" in m.group(1) else "new"), []).append(float(m.group(3)))
for tk in sorted({k[0] for k in models}):
    o, n = models.get((tk, "old"), []), models.get((tk, "new"), [])
    if o and n:
        print(f"\ncompiled 2:4 MiniLM 1x{tk}: before {statistics.median(o):.2f} ms ({min(o):.2f}-{max(o):.2f}), "
              f"after {statistics.median(n):.2f} ms ({min(n):.2f}-{max(n):.2f}), {statistics.median(o) / statistics.median(n):.2f}x")
