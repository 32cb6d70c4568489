import json,collections,statistics,sys
d=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    r=json.loads(l); d[r['case']][r['tag']].append(r['ms'])
for c,v in d.items():
    o,n=v['old'],v['new']
    print(f"{c:22s} old {' '.join(f'{x:6.2f}' for x in o):24s} new {' '.join(f'{x:6.2f}' for x in n):24s} new/old {statistics.median(n)/statistics.median(o) if o and n else 0:.2f}")
