"""A small run of every layout through the op, checked against the reference backend.

Meant to run under compute-sanitizer (bench/gpu_check.sh): a few tiny shapes, each layout
once, odd sizes included (K not a multiple of 4 or of the block, N = 1 and N > 1).
``python -m sparsekern.bench.smoke [--device cuda]``; exit status 0 when all match.
"""
from __future__ import annotations

import argparse
import sys

import torch

SHAPES = ((64, 64, 1), (96, 130, 7), (40, 200, 16))  # (M, K, N)
LAYOUTS = (("2:4", None, 0.5), ("bsr", (16, 16), 0.6), ("bsr", (32, 32), 0.6), ("csc", None, 0.8))


def run(device: str = "cuda", dtype=torch.float32) -> int:
    import sparsekern as sk
    from sparsekern.bench.magnitude import prune

    failures = 0
    g = torch.Generator().manual_seed(0)
    for M, K, N in SHAPES:
        for layout, block, sparsity in LAYOUTS:
            W = prune(torch.randn(M, K, generator=g), layout, sparsity, block)
            x = torch.randn(N, K, generator=g)
            A = sk.to_sparse(W.to(device, dtype), layout=layout, blocksize=block)
            y = sk.linear(x.to(device, dtype), A).float().cpu()
            with sk.use_backend("reference"):
                ref = sk.linear(x.double(), sk.to_sparse(W.double(), layout=layout,
                                                         blocksize=block))
            err = float((y.double() - ref).norm() / ref.norm().clamp_min(1e-30))
            # float32 on a GPU may run on tf32 tensor cores (contract: < 1e-3)
            tol = 1e-2 if dtype != torch.float32 else (1e-3 if device == "cuda" else 1e-5)
            ok = err < tol
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {layout:<4} block={block} M={M} K={K} N={N} "
                  f"rel.err={err:.1e}")
    return failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsekern.bench.smoke", description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("smoke: no CUDA device", file=sys.stderr)
        return 2
    failures = run(a.device, getattr(torch, a.dtype))
    print(f"smoke: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
