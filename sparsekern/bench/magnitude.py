"""Magnitude pruning for the benchmarks: each layout's ``magnitude_prune`` (the layout
registry, sparsekern/formats/layouts.py), under the names the harness has always used.

* ``prune_2to4``: in every group of 4 along K, the 2 largest |w| survive.
* ``prune_blocks``: bm x bk blocks ranked by L1 norm; the weakest ``sparsity`` of them
  (rounded to a whole block count) become zero.
* ``prune_unstructured``: the ``round(sparsity * M * K)`` smallest |w| become zero.
* ``prune(W, layout, sparsity, blocksize)``: any registered layout; ``prune_model``.
"""
from __future__ import annotations

from ..formats.bsr import prune_blocks
from ..formats.csc import prune_unstructured
from ..formats.magnitude import prune, prune_model
from ..formats.semi24 import prune_2to4

__all__ = ["prune", "prune_model", "prune_2to4", "prune_blocks", "prune_unstructured"]
