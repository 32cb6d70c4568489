"""Magnitude pruning to a layout's pattern (each layout's ``magnitude_prune``), for the
benchmarks, the latency table and the tests; the real pruning frontend is sparsekern.prune.

Each function returns a pruned copy of W [M, K] (any float dtype/device) whose zeros have
the layout's pattern, keeping the largest |w|. The count of zeros is exact (ties at the
threshold are broken arbitrarily).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from . import layouts


def check_prune_args(W: torch.Tensor, sparsity: float) -> None:
    if not isinstance(W, torch.Tensor) or W.dim() != 2 or not W.dtype.is_floating_point:
        raise ValueError(f"W must be a 2-D float tensor [M, K]; got "
                         f"{getattr(W, 'shape', type(W).__name__)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1]; got {sparsity}")


def zero_smallest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool keep-mask of scores' shape with the ``count`` smallest scores set False."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    n = flat.numel()
    count = max(0, min(n, count))
    # topk over whichever side is smaller (the zeroed or the kept entries) stays cheap.
    if 0 < count <= n - count:
        keep[torch.topk(flat.float().neg(), count, sorted=False).indices] = False
    elif count > n - count:
        keep.fill_(False)
        if n - count:
            keep[torch.topk(flat.float(), n - count, sorted=False).indices] = True
    return keep.reshape(scores.shape)


def keep_top_in_groups(W: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every group of ``m`` along K (K padded with zeros)."""
    M, K = W.shape
    Kp = -(-K // m) * m
    Wp = nn.functional.pad(W, (0, Kp - K))
    groups = Wp.reshape(M, Kp // m, m)
    top = groups.abs().topk(n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return (groups * mask.to(W.dtype)).reshape(M, Kp)[:, :K].contiguous()


def prune(W: torch.Tensor, layout: str, sparsity: float,
          blocksize: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Prune W for ``layout`` (a layout with a fixed density ignores ``sparsity``)."""
    lay = layouts.get(layout)
    if lay.blocked and blocksize is None:
        raise ValueError(f"layout {layout!r} needs blocksize=(bm, bk)")
    return lay.magnitude_prune(W, sparsity, blocksize)


@torch.no_grad()
def prune_model(model: nn.Module, layout: str, sparsity: float,
                blocksize: Optional[Tuple[int, int]] = None) -> Dict[str, float]:
    """Prune every nn.Linear weight of ``model`` in place; returns {name: zero fraction}."""
    done = {}
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear:
            mod.weight.copy_(prune(mod.weight, layout, sparsity, blocksize))
            done[name] = float((mod.weight == 0).float().mean())
    return done
