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

    Used by the search to predict before pruning. Each layout says what it holds
    (:meth:`~sparsekern.formats.layouts.Layout.planned_density`): fine -> the unstructured
    layouts (csc); N:M -> every N:M layout that holds it (2:4 holds 1:4 and 2:8) and the
    unstructured ones; (bm, bk) blocks -> bsr with that block shape and the unstructured
    ones. Other formats get None (not reachable).
    """
    g = parse(granularity)
    if isinstance(g, NM):
        pattern, shape = "nm", (g.n, g.m)
    elif isinstance(g, Block):
        pattern, shape = "block", (g.bm, g.bk)
    elif isinstance(g, Fine):
        pattern, shape = "fine", None
    else:
        raise ValueError(f"granularity '{g}' is not supported by the latency-aware search; use "
                         f"'fine', 'N:M' (e.g. '2:4') or (bm, bk) blocks")
    return {s.name: layouts.get(s.layout).planned_density(pattern, ratio, shape, s.blocksize)
            for s in specs}
