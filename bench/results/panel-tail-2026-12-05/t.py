"""Median µs of one SparseLinear (inference mode, x of N rows) at MiniLM's layer shapes.

    python t.py THREADS            2:4 and CSC 90% at 16-19 and 33 columns   (ab.sh)
    python t.py THREADS nm14       1:4 at 16-19 and 33 columns              (t_nm14 rows)
    python t.py THREADS avx2       2:4 at 8-11, 17, 25 columns (run it with
                                   SPARSEKERN_CPU_ISA=avx2; the t_avx2 rows)
Prints one JSON line {case: µs}; each figure the median of 5 x 300 calls.
"""
import json
import sys
import time

import torch

import sparsekern as sk
from sparsekern import prune

SHAPES = [(384, 384), (1536, 384), (384, 1536)]
PLANS = {  # name: (shapes, [(label, layout, granularity, ratio)], columns)
    "default": (SHAPES, [("2:4", "2:4", "2:4", None), ("csc", "csc", "fine", 0.9)],
                [16, 17, 18, 19, 33]),
    "nm14": (SHAPES, [("1:4", "1:4", "1:4", None)], [16, 17, 18, 19, 33]),
    "avx2": (SHAPES[:2], [("avx2 2:4", "2:4", "2:4", None)], [8, 9, 10, 11, 17, 25]),
}


def median_us(f, x, n=300):
    for _ in range(20):
        f(x)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f(x)
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(ts)[2]


def main(threads: int, plan: str) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    shapes, layouts, columns = PLANS[plan]
    out = {}
    for (o, i) in shapes:
        for label, layout, gran, ratio in layouts:
            m = torch.nn.Sequential(torch.nn.Linear(i, o))
            prune.prune_model(m, ratio, gran)
            s = sk.sparsify(m, layout=layout)
            for N in columns:
                with torch.inference_mode():
                    out[f"{label} {o}x{i} N={N}"] = median_us(s, torch.randn(N, i))
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "default")))
