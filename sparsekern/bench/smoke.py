"""A small run of every layout through the op, checked against the reference backend.

Meant to run under compute-sanitizer (bench/gpu_check.sh): a few tiny shapes, each layout
once, odd sizes included (K not a multiple of 4 or of the block, N = 1 and N > 1).
``python -m sparsekern.bench.smoke [--device cuda]``; exit status 0 when all match.
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..formats import layouts as layout_registry

SHAPES = ((64, 64, 1), (96, 130, 7), (40, 200, 16))  # (M, K, N)


def _smoke_layouts():
    """(layout, blocksize, sparsity) per registered layout: a fixed-density one at its
    density, a blocked one with 16x16 and 32x32 blocks at 60%, the others at 80%."""
    out = []
    for lay in layout_registry.all_layouts():
        if lay.fixed_density is not None:
            out.append((lay.name, None, 1.0 - lay.fixed_density))
        elif lay.blocked:
            out += [(lay.name, (16, 16), 0.6), (lay.name, (32, 32), 0.6)]
        else:
            out.append((lay.name, None, 0.8))
    return tuple(out)


LAYOUTS = _smoke_layouts()


def run(device: str = "cuda", dtype=torch.float32) -> int:
    from ..formats import to_sparse
    from ..functional import linear
    from ..backends import use_backend
    from ..formats.magnitude import prune

    failures = 0
    g = torch.Generator().manual_seed(0)
    for M, K, N in SHAPES:
        for layout, block, sparsity in LAYOUTS:
            W = prune(torch.randn(M, K, generator=g), layout, sparsity, block)
            x = torch.randn(N, K, generator=g)
            A = to_sparse(W.to(device, dtype), layout=layout, blocksize=block)
            y = linear(x.to(device, dtype), A).float().cpu()
            with use_backend("reference"):
                ref = linear(x.double(), to_sparse(W.double(), layout=layout,
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
