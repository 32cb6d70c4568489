"""A tiny magnitude pruner for the benchmarks (the real frontend is sparsekern.prune).

Each function returns a pruned copy of W [M, K] (any float dtype/device) whose zeros have
``layout``'s pattern, keeping the largest |w|:

* ``prune_2to4``: in every group of 4 along K, the 2 largest |w| survive.
* ``prune_blocks``: bm x bk blocks ranked by L1 norm; the weakest ``sparsity`` of them
  (rounded to a whole block count) become zero.
* ``prune_unstructured``: the ``round(sparsity * M * K)`` smallest |w| become zero.

The count of zeros is exact (ties at the threshold are broken arbitrarily).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn


def _check(W: torch.Tensor, sparsity: float) -> None:
    if not isinstance(W, torch.Tensor) or W.dim() != 2 or not W.dtype.is_floating_point:
        raise ValueError(f"W must be a 2-D float tensor [M, K]; got "
                         f"{getattr(W, 'shape', type(W).__name__)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1]; got {sparsity}")


def _zero_smallest(scores: torch.Tensor, count: int) -> torch.Tensor:
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


def prune_unstructured(W: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``round(sparsity * W.numel())`` entries of smallest magnitude."""
    _check(W, sparsity)
    count = int(round(sparsity * W.numel()))
    return W * _zero_smallest(W.abs(), count).to(W.dtype)


def prune_2to4(W: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every group of 4 along K (K padded with zeros to x4)."""
    _check(W, 0.5)
    M, K = W.shape
    Kp = -(-K // 4) * 4
    Wp = nn.functional.pad(W, (0, Kp - K))
    groups = Wp.reshape(M, Kp // 4, 4)
    top = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return (groups * mask.to(W.dtype)).reshape(M, Kp)[:, :K].contiguous()


def prune_blocks(W: torch.Tensor, sparsity: float, blocksize: Tuple[int, int]) -> torch.Tensor:
    """Zero the weakest (L1 norm) ``round(sparsity * n_blocks)`` bm x bk blocks."""
    _check(W, sparsity)
    bm, bk = blocksize
    M, K = W.shape
    Mb, Kb = -(-M // bm), -(-K // bk)
    Wp = nn.functional.pad(W, (0, Kb * bk - K, 0, Mb * bm - M))
    norms = Wp.reshape(Mb, bm, Kb, bk).abs().float().sum(dim=(1, 3))  # [Mb, Kb]
    keep = _zero_smallest(norms, int(round(sparsity * Mb * Kb)))
    mask = keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    return W * mask.to(W.dtype)


def prune(W: torch.Tensor, layout: str, sparsity: float,
          blocksize: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Prune W for ``layout``: "2:4" (sparsity ignored: always 50%), "bsr" or "csc"."""
    if layout == "2:4":
        return prune_2to4(W)
    if layout == "bsr":
        if blocksize is None:
            raise ValueError("layout 'bsr' needs blocksize=(bm, bk)")
        return prune_blocks(W, sparsity, blocksize)
    if layout == "csc":
        return prune_unstructured(W, sparsity)
    raise ValueError(f"layout must be '2:4', 'bsr' or 'csc'; got {layout!r}")


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
