"""Time the CPU kernels of sparsekern against dense matmul (torch and NumPy BLAS) and
torch.sparse, on the shapes of the CPU-kernel targets. For iterating on csrc/cpu; the
benchmark harness proper is sparsekern.bench.

Every point calls y = x @ W.T the way nn layers do (B = x.T, column-major), times the dense
and sparse calls interleaved in the same loop (the machine may be shared) and reports
medians, the speedup over the faster dense, and what the sparse kernel achieved: GB/s over
the bytes it must move (format + activations + output) and GFLOP/s of useful work (2 per
stored entry per column).

    python tools/cpu_kernel_timing.py                 # the target table (a few minutes)
    python tools/cpu_kernel_timing.py --quick         # fewer shapes and N
    python tools/cpu_kernel_timing.py --only csc --shapes 4096x4096 --ns 1,32
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch

import sparsekern as sk
from sparsekern.timing import round_robin

BIG = [(4096, 4096), (11008, 4096)]
STAT = statistics.median
CLOCK = time.perf_counter
SMALL = [(384, 384), (384, 1536), (768, 768), (768, 3072), (3072, 768)]


def prune(W: torch.Tensor, layout: str, sparsity: float, block=(32, 32), seed=0) -> torch.Tensor:
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


def bench_point(M, K, N, layout, sparsity, *, zero_act=0.0, block=(32, 32), reps=None,
                peers=True, dtype=torch.float32):
    torch.manual_seed(0)
    W = prune(torch.randn(M, K), layout, sparsity, block)
    A = sk.to_sparse(W.to(dtype), layout=layout, blocksize=block) if layout == "bsr" else \
        sk.to_sparse(W.to(dtype), layout=layout)
    x = torch.randn(N, K)
    if zero_act:
        x = x * (torch.rand(N, K) >= zero_act)
    B = x.t()
    Wn, xn = W.numpy(), np.ascontiguousarray(x.numpy())
    op = torch.ops.sparsekern.spmm
    args = A.op_args()
    fns = {
        "sparse": lambda: op(*args, B),
        "torch": lambda: torch.nn.functional.linear(x, W),
        "numpy": lambda: xn @ Wn.T,
    }
    if peers and layout in ("csc", "bsr"):
        Wsp = W.to_sparse_csr() if layout == "csc" else W.to_sparse_bsr(block)
        fns["torch.sparse"] = lambda: torch.sparse.mm(Wsp, B)
    # Check the answer once before timing.
    ref = torch.nn.functional.linear(x.double(), W.double()).t()
    err = ((fns["sparse"]().double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    assert err < (1e-5 if dtype == torch.float32 else 1e-2), f"wrong result: rel err {err}"
    flops_dense = 2.0 * M * K * N
    if reps is None:
        reps = int(min(41, max(5, 0.6 / max(1e-4, flops_dense / 40e9))))
    for k, f in fns.items():  # warm every path (and build the cached CSC repack) first
        if k != "numpy":
            f()
    # Torch-based paths interleaved (a noisy neighbour hits them alike). NumPy's OpenBLAS
    # threads keep spinning for a while after each call and would steal the cores from the
    # next OpenMP call, so NumPy is timed in its own block afterwards.
    samples = round_robin({k: f for k, f in fns.items() if k != "numpy"}, reps, clock=CLOCK)
    fns["numpy"]()
    samples.update(round_robin({"numpy": fns["numpy"]}, reps, clock=CLOCK))
    time.sleep(0.3)  # let OpenBLAS's threads go idle before the next point
    med = {k: STAT(v) * 1e3 for k, v in samples.items()}
    best_dense = min(med["torch"], med["numpy"])
    nnz_useful = int((W != 0).sum()) if layout != "bsr" else A.values.numel()
    if zero_act and N == 1:
        nnz_useful = int((W[:, x[0] != 0] != 0).sum())
    moved = A.nbytes + 4 * (K * N + M * N)
    row = {
        "layout": layout if layout != "bsr" else f"bsr{block[0]}x{block[1]}",
        "shape": f"{M}x{K}", "N": N,
        "sparsity": f"{sparsity:.0%}" + (f"+{zero_act:.0%}act0" if zero_act else ""),
        "dtype": str(dtype).replace("torch.", ""),
        "sparse_ms": med["sparse"], "torch_ms": med["torch"], "numpy_ms": med["numpy"],
        "speedup": best_dense / med["sparse"],
        "GB/s": moved / med["sparse"] / 1e6,
        "GFLOP/s": 2.0 * nnz_useful * N / med["sparse"] / 1e6,
    }
    if "torch.sparse" in med:
        row["vs_torch_sparse"] = med["torch.sparse"] / med["sparse"]
    return row


def print_row(r):
    peer = f"{r['vs_torch_sparse']:6.2f}x" if "vs_torch_sparse" in r else "     - "
    print(f"{r['layout']:>9} {r['dtype']:>8} {r['shape']:>10} {r['N']:>4} {r['sparsity']:>12} "
          f"{r['sparse_ms']:9.3f} {min(r['torch_ms'], r['numpy_ms']):9.3f} "
          f"{r['speedup']:7.2f}x {peer} {r['GB/s']:7.1f} {r['GFLOP/s']:8.1f}", flush=True)


def header():
    print(f"{'layout':>9} {'weights':>8} {'shape':>10} {'N':>4} {'sparsity':>12} "
          f"{'sparse ms':>9} {'dense ms':>9} {'speedup':>8} {'vs t.sp':>7} {'GB/s':>7} "
          f"{'GFLOP/s':>8}", flush=True)


def scaling(M=4096, K=4096, N=128):
    """1 -> all threads on compute-bound rows (N=128) for each layout."""
    nt = torch.get_num_threads()
    print(f"\nparallel scaling 1 -> {nt} threads, {M}x{K}, N={N}")
    for layout, sp, block in [("2:4", 0.5, None), ("bsr", 0.7, (32, 32)), ("csc", 0.9, None)]:
        W = prune(torch.randn(M, K), layout, sp, block or (32, 32))
        A = sk.to_sparse(W, layout=layout, blocksize=block) if layout == "bsr" else \
            sk.to_sparse(W, layout=layout)
        B = torch.randn(N, K).t()
        times = {}
        for t in (1, nt):
            torch.set_num_threads(t)
            call = lambda: torch.ops.sparsekern.spmm(*A.op_args(), B)  # noqa: E731
            call(), call()  # warm-up
            times[t] = statistics.median(round_robin({"spmm": call}, 9)["spmm"])
        torch.set_num_threads(nt)
        print(f"  {layout:>4} {sp:.0%}: 1 thread {times[1]*1e3:8.2f} ms, {nt} threads "
              f"{times[nt]*1e3:8.2f} ms, scaling {times[1]/times[nt]:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="", help="comma list of: 2:4,bsr,csc,small,scaling,bf16")
    p.add_argument("--shapes", default="", help="e.g. 4096x4096,11008x4096")
    p.add_argument("--ns", default="", help="e.g. 1,8,32")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads first")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="min is steadier on a loaded machine; the report uses medians")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: process CPU time (steadier when other jobs share the cores)")
    a = p.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if a.clock == "wall" else time.process_time
    if a.threads:
        torch.set_num_threads(a.threads)
    global STAT
    STAT = statistics.median if a.stat == "median" else min
    only = set(a.only.split(",")) if a.only else {"2:4", "bsr", "csc", "small", "scaling", "bf16"}
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")] if a.shapes \
        else (BIG[:1] if a.quick else BIG)
    ns = [int(v) for v in a.ns.split(",")] if a.ns else ([1, 32, 256] if a.quick
                                                         else [1, 8, 32, 128, 512])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"isa {sk._extension._C.cpu_isa() if sk._extension._C else 'none'}, numpy {np.__version__}")
    header()
    kw = dict(reps=a.reps)
    for M, K in shapes:
        for N in ns:
            if "2:4" in only:
                print_row(bench_point(M, K, N, "2:4", 0.5, **kw))
            if "bsr" in only:
                for sp in (0.7, 0.9):
                    print_row(bench_point(M, K, N, "bsr", sp, **kw))
            if "csc" in only:
                for sp in (0.9, 0.95):
                    print_row(bench_point(M, K, N, "csc", sp, **kw))
                if N == 1:
                    print_row(bench_point(M, K, N, "csc", 0.9, zero_act=0.5, **kw))
            if "bf16" in only and N in (1, 32):
                print_row(bench_point(M, K, N, "2:4", 0.5, dtype=torch.bfloat16, peers=False, **kw))
                print_row(bench_point(M, K, N, "bsr", 0.7, dtype=torch.bfloat16, peers=False, **kw))
                print_row(bench_point(M, K, N, "csc", 0.9, dtype=torch.bfloat16, peers=False, **kw))
    if "small" in only:
        print("\nsmall model shapes, 90% sparsity (csc, bsr 32x32) and 2:4")
        header()
        for M, K in (SMALL[:2] if a.quick else SMALL):
            for N in ([1, 32] if a.quick else [1, 8, 32, 128]):
                for layout, sp in (("csc", 0.9), ("bsr", 0.9), ("2:4", 0.5)):
                    print_row(bench_point(M, K, N, layout, sp, **kw))
    if "scaling" in only:
        scaling()
    return 0


if __name__ == "__main__":
    sys.exit(main())
