"""Time sparsekern's CPU kernels on all-MiniLM-L6-v2's Linear shapes against the best dense.

Shapes (out x in): 384x384 (attention q/k/v/o), 1536x384 (FFN up), 384x1536 (FFN down); N =
16 tokens (1 sentence) and 512 (32 sentences). Each point calls y = x @ W.T + b the way
SparseLinear does (B = x.T, column-major; bias), interleaving the sparse call with torch's
dense F.linear (same loop, so a noisy neighbour hits both alike); NumPy's sgemm (x @ W.T + b)
is timed in its own block after them (its OpenBLAS threads spin after each call and would
steal the cores from the next call). Reports medians, the spread (p25-p75 of the sparse
samples) and the speedup over the faster dense.

--clock thread: everything on one thread (torch, the kernels and OpenBLAS) timed by the
calling thread's CPU time (time.thread_time), which a loaded machine barely disturbs: per-core
efficiency at equal threads, not the 2-thread latency.

Run NumPy honestly: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow its sgemm, so unset them:
    flock /work/wt/timing.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python tools/cpu_minilm_shapes.py [--ns 16,512] [--layouts csc,bsr,2:4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits
import torch

import sparsekern as sk
from sparsekern.timing import round_robin

SHAPES = [(384, 384), (1536, 384), (384, 1536)]
SPARSITIES = {"csc": (0.5, 0.7, 0.8), "bsr": (0.5, 0.7, 0.8), "2:4": (0.5,)}


def prune(W: torch.Tensor, layout: str, sparsity: float, block: int, g: torch.Generator):
    M, K = W.shape
    if layout == "2:4":
        G = W.reshape(M, K // 4, 4)
        return G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    if layout == "bsr":
        keep = torch.rand(M // block, K // block, generator=g) >= sparsity
        return W * keep.repeat_interleave(block, 0).repeat_interleave(block, 1)
    return W * (torch.rand(M, K, generator=g) >= sparsity)


def quartiles(v):
    q = statistics.quantiles(v, n=4)
    return q[0], statistics.median(v), q[2]


CLOCK = time.perf_counter


def point(M, K, N, layout, sparsity, block, reps):
    g = torch.Generator().manual_seed(M * 7 + K * 3 + N)
    W = prune(torch.randn(M, K, generator=g), layout, sparsity, block, g)
    bias = torch.randn(M, generator=g)
    x = torch.randn(N, K, generator=g)
    A = sk.to_sparse(W, layout=layout, blocksize=(block, block)) if layout == "bsr" \
        else sk.to_sparse(W, layout=layout)
    args = A.op_args()
    op = torch.ops.sparsekern.spmm
    B = x.t()
    sparse = lambda: op(*args, B, bias).t()  # noqa: E731
    dense = lambda: torch.nn.functional.linear(x, W, bias)  # noqa: E731
    xn, Wtn, bn = x.numpy(), np.ascontiguousarray(W.t().numpy()), bias.numpy()
    numpy_dense = lambda: xn @ Wtn + bn  # noqa: E731
    ref = torch.nn.functional.linear(x.double(), W.double(), bias.double())
    err = ((sparse().double() - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-5, f"wrong result {layout} {M}x{K} N={N}: rel err {err}"
    nt = torch.get_num_threads()
    with torch.inference_mode():
        for _ in range(5):
            sparse(), dense()
        got = round_robin({"sparse": sparse, "dense": dense}, reps, clock=CLOCK)
        s, d, s1 = got["sparse"], got["dense"], []
        if nt > 1:  # the same sparse call on one thread (is the second one worth it?)
            torch.set_num_threads(1)
            s1 = round_robin({"sparse1": sparse}, reps, clock=CLOCK)["sparse1"]
            torch.set_num_threads(nt)
    for _ in range(5):
        numpy_dense()
    n = round_robin({"numpy": numpy_dense}, reps, clock=CLOCK)["numpy"]
    time.sleep(0.1)  # OpenBLAS's threads go idle before the next point
    sq, dq, nq = quartiles(s), quartiles(d), quartiles(n)
    best = min(dq[1], nq[1])
    nnz = int((W != 0).sum())
    return {"layout": layout if layout != "bsr" else f"bsr{block}", "shape": f"{M}x{K}", "N": N,
            "sparsity": sparsity, "sparse_us": sq[1] * 1e6, "spread": (sq[0] * 1e6, sq[2] * 1e6),
            "torch_us": dq[1] * 1e6, "numpy_us": nq[1] * 1e6, "speedup": best / sq[1],
            "sparse1_us": statistics.median(s1) * 1e6 if s1 else float("nan"),
            "bound": 1.0 / (1.0 - sparsity) if layout != "2:4" else 2.0,
            "gflops": 2.0 * nnz * N / sq[1] / 1e9}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ns", default="16,512")
    p.add_argument("--layouts", default="csc,bsr,2:4")
    p.add_argument("--block", type=int, default=32, help="BSR block size (square)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "thread"), default="wall")
    a = p.parse_args(argv)
    global CLOCK
    if a.clock == "thread":
        CLOCK = time.thread_time
        a.threads = 1
        _limits = threadpool_limits(1)  # noqa: F841 (kept for the whole run)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}, isa "
          f"{sk._extension._C.cpu_isa()}, clock {a.clock}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"| layout | shape | N | sparsity | sparse us [p25-p75] | torch us | numpy us | "
          f"speedup vs best dense | FLOP bound | sparse GFLOP/s | sparse 1 thread us |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for N in (int(v) for v in a.ns.split(",")):
        reps = a.reps or (301 if N <= 16 else 41)
        for M, K in SHAPES:
            for layout in a.layouts.split(","):
                for sp in SPARSITIES[layout]:
                    r = point(M, K, N, layout, sp, a.block, reps)
                    print(f"| {r['layout']} | {r['shape']} | {N} | {sp:.0%} | {r['sparse_us']:.1f} "
                          f"[{r['spread'][0]:.1f}-{r['spread'][1]:.1f}] | {r['torch_us']:.1f} | "
                          f"{r['numpy_us']:.1f} | {r['speedup']:.2f}x | {r['bound']:.1f}x | "
                          f"{r['gflops']:.0f} | {r['sparse1_us']:.1f} |", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
