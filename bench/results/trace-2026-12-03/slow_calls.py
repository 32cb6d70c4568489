"""The slow calls (> 2x the candidate's quiet median) of each loaded phase, with their start times.

    python slow_calls.py traces.jsonl
"""
import json, statistics, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    for n in ("2:4", "bsr32x32 90%", "csc 90%"):
        q = [t for p in d["phases"] if not p["loaded"] for t in p["calls"][n]["ms"]]
        qm = statistics.median(q)
        for p in d["phases"]:
            if not p["loaded"]:
                continue
            c = p["calls"][n]
            slow = [(s, round(t / qm, 1)) for s, t in zip(c["start"], c["ms"]) if t > 2 * qm]
            print(f"{d['pool']:5s} {d['shape']}² N={d['N']:<3d} {n:13s} phase {p['phase']}: "
                  f"{len(slow):2d}/{len(c['ms'])} slow; (start s, x quiet): {slow[:6]}")
