"""The full run's forward+backward table alone (sparsekern.bench.training with the full
run's timer, 2 threads), `rounds` times, into training.json / training.md here.

    PYTHONPATH=. python bench/results/training-2026-12-03/run.py [rounds]
"""
import json, os, subprocess, sys, time

import torch

from sparsekern.bench import machine, training
from sparsekern.timing.timers import FULL_TIMER, TimerSettings

here = os.path.dirname(os.path.abspath(__file__))
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--", "csrc", "sparsekern"],
                       capture_output=True, text=True).stdout.strip() != ""
doc = {"commit": commit + ("+dirty" if dirty else ""), "threads": 2,
       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": []}
with machine.ThreadSetting(2):
    for r in range(rounds):
        timer = TimerSettings(**FULL_TIMER.to_dict())
        recs = training.run(timer, progress=lambda m: print(m, file=sys.stderr))
        doc["rounds"].append(recs)
        print(f"round {r + 1}\n" + training.markdown(recs), flush=True)
doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
with open(os.path.join(here, "training.json"), "w") as f:
    json.dump(doc, f, indent=1, default=str)
with open(os.path.join(here, "training.md"), "w") as f:
    f.write(f"# Forward + backward, {doc['started']} .. {doc['finished']}, kernels of "
            f"{doc['commit']}, 2 threads\n\n")
    for r, recs in enumerate(doc["rounds"]):
        f.write(f"## Round {r + 1}\n\n{training.markdown(recs)}\n\n")
