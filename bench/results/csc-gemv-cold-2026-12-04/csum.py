import json,collections,statistics,sys
d=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    r=json.loads(l); d[r['case']][r['tag']].append(r['ms'])
tags=sys.argv[2].split(",") if len(sys.argv)>2 else ["old","new"]
dense={}
for c,v in d.items():
    shape=c.split()[0]
    if c.endswith("dense-numpy"): dense[(shape,"cold")]=statistics.median(sum(v.values(),[]))
    if c.endswith("dense-numpy warm"): dense[(shape,"warm")]=statistics.median(sum(v.values(),[]))
for c,v in d.items():
    shape=c.split()[0]; kind="warm" if c.endswith("warm") else "cold"
    cells=[]
    for t in tags:
        xs=v.get(t,[])
        if not xs: continue
        m=statistics.median(xs)
        sp="" if "dense" in c else f" ({dense[(shape,kind)]/m:.2f}x)"
        cells.append(f"{t} {m:7.3f} [{min(xs):.3f}-{max(xs):.3f}]{sp}")
    print(f"{c:26s} " + "   ".join(cells))
