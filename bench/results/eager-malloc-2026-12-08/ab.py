"""A/B of sparsekern.keep_freed_memory on the pruned MiniLM, alternating processes.

python bench/results/eager-malloc-2026-12-08/ab.py ROUNDS > ab.jsonl  (run from the repo root,
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset). Each process ("off" or "on", alternating) builds
the dense model and the three pruned sparsekern models, then times each (eager and
torch.compile) at 32x64 and 1x16 tokens: median of 7 calls after 2 untimed, with the page
faults and system time per call from getrusage (the process's every thread)."""
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def child(mode: str) -> None:
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import torch
    import sparsekern as sk
    if mode == "on":
        assert sk.keep_freed_memory()
    from sparsekern.models.minilm import load_minilm
    from sparsekern.prune import prune_model
    from e2e_peers import VARIANTS, compiled, make_inputs
    torch.set_num_threads(2)
    torch._dynamo.config.recompile_limit = 64
    dense, _ = load_minilm()
    models = {"dense": dense}
    for variant, (gran, ratio, layout) in VARIANTS.items():
        m = copy.deepcopy(dense)
        prune_model(m, ratio, granularity=gran, criterion="l1")
        models[layout] = sk.sparsify(m, layout=layout).eval()
    out = {"mode": mode}
    with torch.inference_mode():
        for name, m in models.items():
            for how in ("eager", "compile"):
                f = m if how == "eager" else compiled(m, "eager")
                for b, t in ((32, 64), (1, 16)):
                    ids, mask = make_inputs(b, t)
                    n = 7 if b == 32 else 40
                    for _ in range(2):
                        f(ids, mask)
                    r0, ts = resource.getrusage(resource.RUSAGE_SELF), []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        f(ids, mask)
                        ts.append(time.perf_counter() - t0)
                    r1 = resource.getrusage(resource.RUSAGE_SELF)
                    out[f"{name} {how} {b}x{t}"] = {
                        "ms": statistics.median(ts) * 1e3,
                        "faults": (r1.ru_minflt - r0.ru_minflt) / n,
                        "sys_ms": (r1.ru_stime - r0.ru_stime) / n * 1e3}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        child(sys.argv[2])
    else:
        for r in range(int(sys.argv[1])):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                subprocess.run([sys.executable, __file__, "-", mode], check=True)
