"""Quiet vs loaded timing of the CPU kernels and dense (issue 13 item 1).

Alternates quiet and loaded phases (a busy `sh` loop pinned to the last core) several times;
in each phase every case is timed `--reps` times, the cases interleaved. Reports per case the
quiet and loaded medians (over all phases), the spread of phase medians, loaded/quiet, and
sparse/dense-best ratios under load. Prints the load average at each phase.

    python tools/cpu_contention.py                       # 2048^2 and 4096^2, N=1 and 64
    python tools/cpu_contention.py --shapes 4096x4096 --ns 1 --phases 2

Within a round the cases run in the order dense, 2:4, bsr, csc, so 2:4 always follows a torch
call: torch's own OpenMP team (its bundled libgomp) keeps spinning for a few ms after it and
takes the cores from the next call's helper thread. That is what a model does too (dense ops
between sparse layers); measured on 2048^2 N=1 2:4, 2 threads: 0.4 ms alone, 2.6-3.3 ms right
after a torch linear, 0.6 ms with 1 thread.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import time

import torch

import sparsekern as sk
from sparsekern.timing import round_robin

CLOCK = time.perf_counter


def prune(W, layout, sparsity, block=(32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    M, K = W.shape
    if layout == "2:4":
        G = W.reshape(M, K // 4, 4)
        return G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    if layout == "bsr":
        bm, bk = block
        keep = torch.rand(M // bm, K // bk, generator=g) >= sparsity
        return W * keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)
    return W * (torch.rand(M, K, generator=g) >= sparsity)


def cases(shapes, ns):
    op = torch.ops.sparsekern.spmm
    out = {}
    for M, K in shapes:
        W0 = torch.randn(M, K)
        for N in ns:
            x = torch.randn(N, K)
            B = x.t()
            out[(f"{M}x{K}", N, "dense")] = (lambda x=x, W=W0: torch.nn.functional.linear(x, W))
            for layout, sp in (("2:4", 0.5), ("bsr", 0.9), ("csc", 0.9)):
                W = prune(W0, layout, sp)
                A = sk.to_sparse(W, layout=layout, blocksize=(32, 32)) if layout == "bsr" \
                    else sk.to_sparse(W, layout=layout)
                args = A.op_args()
                ref = W @ B
                got = op(*args, B)
                assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3), layout
                out[(f"{M}x{K}", N, layout)] = (lambda args=args, B=B: op(*args, B))
    return out


def spin_start(core):
    return subprocess.Popen(["taskset", "-c", str(core), "sh", "-c", "while :; do :; done"],
                            start_new_session=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shapes", default="2048x2048,4096x4096")
    p.add_argument("--ns", default="1,64")
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--phases", type=int, default=3, help="quiet+loaded pairs")
    p.add_argument("--core", type=int, default=os.cpu_count() - 1)
    a = p.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    ns = [int(v) for v in a.ns.split(",")]
    fns = cases(shapes, ns)
    for f in fns.values():
        f()
    samples = {(k, ph): [] for k in fns for ph in ("quiet", "loaded")}
    phase_meds = {(k, ph): [] for k in fns for ph in ("quiet", "loaded")}
    print(f"threads {torch.get_num_threads()} isa {sk._extension._C.cpu_isa()}")
    for i in range(a.phases):
        for ph in ("quiet", "loaded"):
            spin = spin_start(a.core) if ph == "loaded" else None
            time.sleep(0.3)
            try:
                cur = round_robin(fns, a.reps, clock=CLOCK)
            finally:
                if spin is not None:
                    os.killpg(spin.pid, signal.SIGKILL)
                    spin.wait()
            for k, v in cur.items():
                samples[(k, ph)] += v
                phase_meds[(k, ph)].append(statistics.median(v) * 1e3)
            print(f"phase {i} {ph:6s} loadavg {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'shape':>10} {'N':>3} {'case':>6} {'quiet ms':>9} {'(phase range)':>15} "
          f"{'loaded ms':>9} {'(phase range)':>15} {'L/Q':>5} {'vs dense Q':>10} {'vs dense L':>10}")
    for k in fns:
        q = statistics.median(samples[(k, "quiet")]) * 1e3
        lo = statistics.median(samples[(k, "loaded")]) * 1e3
        dk = (k[0], k[1], "dense")
        dq = statistics.median(samples[(dk, "quiet")]) * 1e3
        dl = statistics.median(samples[(dk, "loaded")]) * 1e3
        pq, pl = phase_meds[(k, "quiet")], phase_meds[(k, "loaded")]
        print(f"{k[0]:>10} {k[1]:>3} {k[2]:>6} {q:9.3f} {min(pq):6.2f}-{max(pq):<7.2f} "
              f"{lo:9.3f} {min(pl):6.2f}-{max(pl):<7.2f} {lo / q:5.2f} {dq / q:9.2f}x "
              f"{dl / lo:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
