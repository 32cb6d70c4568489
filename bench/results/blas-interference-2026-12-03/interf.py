"""torch (MKL on GNU OpenMP) and NumPy (OpenBLAS) dense GEMMs timed alone and interleaved
(one call of each in turns, as a benchmark that alternates its dense candidates does).
Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, 2 threads each:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/results/blas-interference-2026-12-03/interf.py
"""
import statistics, time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def med(fns, n):
    r = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); r[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in r.items()}


print("| shape | N | torch alone | numpy alone | torch interleaved | numpy interleaved |")
print("|---|---:|---:|---:|---:|---:|")
for (M, K, N) in [(2048, 2048, 1), (4096, 4096, 1), (1536, 384, 32), (4096, 4096, 32),
                  (4096, 4096, 512)]:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(M, K, generator=g); x = torch.randn(N, K, generator=g)
    Wn, xn = W.numpy().T, x.numpy()
    n = 20 if N >= 512 else 100
    ft, fn = (lambda: F.linear(x, W)), (lambda: xn @ Wn)
    a, b = med({"t": ft}, n)["t"], med({"n": fn}, n)["n"]
    both = med({"t": ft, "n": fn}, n)
    print(f"| {M}x{K} | {N} | {a:.3f} | {b:.3f} | {both['t']:.3f} | {both['n']:.3f} |", flush=True)
