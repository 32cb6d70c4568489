"""What fraction of a weight each format stores: from the actual zeros, or from a plan.

The latency of a sparse format grows with what it stores, so the latency table is indexed
by the *stored fraction* ("density") of the weight matrix W [M, K]:

* ``csc``: nonzeros / (M*K);
* ``bsrBMxBK``: blocks holding a nonzero / all blocks (padded edge blocks count whole);
* ``2:4``: always 1/2 of the (padded) matrix, and only possible when every group of 4
  along K holds at most 2 nonzeros.
Each is the layout's ``pattern_density`` (sparsekern/formats/layouts.py).
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch

from ..formats import layouts
from ..formats.bsr import block_density  # noqa: F401  (re-exported)
from ..formats.semi24 import is_semi24  # noqa: F401  (re-exported)
from ..prune.granularity import NM, Block, Fine, parse
from .formats import FormatSpec


def pattern_densities(W: torch.Tensor, specs: Iterable[FormatSpec]) -> Dict[str, Optional[float]]:
    """{format name: stored fraction of W [M, K] in that format, None where impossible}."""
    W = W.detach()
    return {spec.name: layouts.get(spec.layout).pattern_density(W, spec.blocksize)
            for spec in specs}


def planned_densities(granularity, ratio: float, specs: Iterable[FormatSpec]
                      ) -> Dict[str, Optional[float]]:
    """Stored fractions a layer will have after pruning ``ratio`` of it in ``granularity``.

    Used by the search to predict before pruning: fine -> csc; N:M -> every N:M layout
    that holds it (2:4 when every group of 4 keeps <= 2, i.e. N <= 2 and M a multiple of 4;
    1:4 when N <= 1) and csc; (bm, bk) blocks ->
    bsr with that block shape and csc. Other formats get None (not reachable).
    """
    g = parse(granularity)
    out: Dict[str, Optional[float]] = {s.name: None for s in specs}
    names = set(out)
    if isinstance(g, NM):
        for lay in layouts.all_layouts():  # the N:M layouts that hold n:m (2:4 holds 1:8)
            if lay.name in names and lay.holds_group(g.n, g.m):
                out[lay.name] = lay.fixed_density
        if "csc" in names:
            out["csc"] = g.n / g.m
    elif isinstance(g, Block):
        name = f"bsr{g.bm}x{g.bk}"
        if name in names:
            out[name] = 1.0 - ratio
        if "csc" in names:
            out["csc"] = 1.0 - ratio
    elif isinstance(g, Fine):
        if "csc" in names:
            out["csc"] = 1.0 - ratio
    else:
        raise ValueError(f"granularity '{g}' is not supported by the latency-aware search; use "
                         f"'fine', 'N:M' (e.g. '2:4') or (bm, bk) blocks")
    return out
