"""Time the CSC GEMV (N=1) of 4096x4096 weights, warm (one layer back to back) and cold (a
rotation of layers whose weights exceed the 32 MB LLC), and report GB/s over the bytes the
format must move (values + row indices + column pointers + x + y).

--clock thread (default): one thread, the calling thread's CPU time (time.thread_time), which
a loaded machine barely disturbs; --clock wall: wall clock with torch's thread count.
Compare trees by PYTHONPATH, alternating runs:
    flock /work/wt/timing.lock env PYTHONPATH=. python tools/cpu_csc_gemv_timing.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import sparsekern as sk
from sparsekern.timing import round_robin


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--reps", type=int, default=60)
    p.add_argument("--zeros", type=float, default=0.0, help="fraction of zero activations")
    a = p.parse_args(argv)
    clock = time.thread_time if a.clock == "thread" else time.perf_counter
    if a.clock == "thread":
        torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n = a.size
    layers = []
    while sum(A.nbytes for A in layers) < 64 * 2**20 or len(layers) < 2:
        W = torch.randn(n, n, generator=g) * (torch.rand(n, n, generator=g) >= a.sparsity)
        layers.append(sk.to_sparse(W, layout="csc"))
    x = torch.randn(n, 1, generator=g) * (torch.rand(n, 1, generator=g) >= a.zeros)
    op = torch.ops.sparsekern.spmm
    args = [A.op_args() for A in layers]
    moved = layers[0].nbytes + 8 * n
    res = {}
    with torch.inference_mode():
        for name, seq in (("warm", [args[0]] * len(args)), ("cold", args)):
            for ar in seq:
                op(*ar, x)
            calls = {i: (lambda ar=ar: op(*ar, x)) for i, ar in enumerate(seq)}
            samples = [t for ts in round_robin(calls, a.reps, clock=clock).values() for t in ts]
            q = statistics.quantiles(samples, n=4)
            res[name] = (q[1], q[0], q[2])
    print(f"csc {n}x{n} {a.sparsity:.0%} N=1 zeros {a.zeros:.0%}, clock {a.clock}, threads "
          f"{torch.get_num_threads()}, {layers[0].indices.dtype} rows, {moved / 1e6:.1f} MB/call, "
          f"{len(layers)} layers cold, load {os.getloadavg()[0]:.2f}")
    for name, (med, lo, hi) in res.items():
        print(f"  {name}: {med * 1e6:7.0f} us [p25 {lo * 1e6:.0f} - p75 {hi * 1e6:.0f}]  "
              f"{moved / med / 1e9:5.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
