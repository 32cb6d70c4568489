"""SELL vs CSC vs the best dense GEMV (N=1), warm and cold, 2 threads (sparsekern at this commit).

Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python sell_vs_csc.py
Cold: each sample after sparsekern.timing.CacheFlusher (reads 2x the LLC). Rounds interleave
the candidates; each figure is the median of 3 rounds' medians (30 samples each), with the
rounds' range.
"""
import statistics as st
import time

import numpy as np
import torch

import sparsekern as sk
from sparsekern.timing.timers import CacheFlusher

torch.set_num_threads(2)
flush = CacheFlusher()
SHAPES = [(1536, 384), (384, 1536), (3072, 768), (768, 3072), (4096, 4096), (11008, 4096),
          (4096, 11008)]


def sample(f, cold, n=30):
    ts = []
    for _ in range(n):
        if cold:
            flush()
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return st.median(ts)


def main():
    g = torch.Generator().manual_seed(0)
    print("| M x K | sparsity | ctx | best dense ms | csc ms | sell ms | csc x | sell x | sell/csc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for M, K in SHAPES:
        for sparsity in (0.9, 0.95):
            W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) >= sparsity)
            x = torch.randn(K, 1, generator=g)
            Wn, xn = W.numpy(), x.numpy()
            S, C = sk.to_sparse(W, layout="sell"), sk.to_sparse(W, layout="csc")
            fns = {"torch": lambda: W @ x, "numpy": lambda: Wn @ xn,
                   "csc": lambda: sk.spmm(C, x), "sell": lambda: sk.spmm(S, x)}
            for f in fns.values():
                f()
            for cold in (False, True):
                rounds = {k: [] for k in fns}
                for _ in range(3):
                    for k, f in fns.items():
                        rounds[k].append(sample(f, cold))
                med = {k: st.median(v) * 1e3 for k, v in rounds.items()}
                rng = {k: (min(v) * 1e3, max(v) * 1e3) for k, v in rounds.items()}
                dense = min(med["torch"], med["numpy"])
                print(f"| {M}x{K} | {sparsity:.0%} | {'cold' if cold else 'warm'} | {dense:.3f} | "
                      f"{med['csc']:.3f} ({rng['csc'][0]:.3f}-{rng['csc'][1]:.3f}) | "
                      f"{med['sell']:.3f} ({rng['sell'][0]:.3f}-{rng['sell'][1]:.3f}) | "
                      f"{dense / med['csc']:.2f}x | {dense / med['sell']:.2f}x | "
                      f"{med['sell'] / med['csc']:.2f} |", flush=True)



if __name__ == "__main__":
    main()
