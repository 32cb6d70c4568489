"""Masks -> formats -> sparse layers, and saving / loading the converted model.

:func:`convert` applies masks and then runs ``sparsekern.sparsify`` (one swap loop for both):
every pruned nn.Linear / transformers Conv1D becomes a SparseLinear and every pruned
nn.Conv2d (groups=1) a SparseConv2d. :func:`save_sparse` / :func:`load_sparse` are
sparsekern.save_sparse / load_sparse, re-exported.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from ..nn import blocksize_arg, check_sparsify_args, sparsify
from ..serialization import load_sparse, save_sparse  # noqa: F401  (re-exported)
from .layers import select_layers
from .masks import apply_masks, check_masks


def convert(model: nn.Module, layout: str = "auto", blocksize=None,
            masks: Optional[Mapping[str, torch.Tensor]] = None,
            max_density: Optional[float] = None, layers=None, *, example_input=None,
            latency_table=None) -> nn.Module:
    """Swap pruned layers for SparseLinear / SparseConv2d (in place), via sparsekern.sparsify.

    Args:
        model: the pruned model (its zeros are the pattern), or a model plus ``masks``.
        layout: a registered layout ("2:4", "1:4", "bsr", "csc", "sell") or "auto" (sparsekern's choice
            per layer, as in sparsekern.sparsify: the format expected fastest for the weight's zeros, dense
            when none is).
        blocksize: (bm, bk) for "bsr" (e.g. the block granularity that was pruned).
        masks: applied first (pruned weights set to 0), after every argument is checked.
        max_density: pack bsr/csc only when the stored fraction is at most this.
        layers: names to convert (default every nn.Linear / transformers Conv1D / nn.Conv2d).
        example_input, latency_table: for "auto": the input(s) to measure at, or a table
            from sparsekern.auto.build_table.
    Returns the model (or the new layer when ``model`` itself is a Linear/Conv2d). The
    decisions are in ``model.sparsekern_report`` ({name: (layout or "dense", reason)}),
    every layer left dense is logged at INFO with the reason; grouped convolutions stay
    dense. With ``layers`` None the report also names each weight of 3 or more dims outside
    a Linear-like layer (a mixture of experts' [E, out, in] parameter), which is left as it
    is: ("dense", "3-D stack of weight matrices (E, out, in) (e.g. experts): not a
    Linear-like layer; not pruned").
    """
    blocksize = blocksize_arg(blocksize)
    check_sparsify_args(layout, blocksize, max_density, example_input, latency_table)
    names = None if layers is None else list(select_layers(model, layers))
    if masks is not None:
        check_masks(model, masks)
        apply_masks(model, masks)
    return sparsify(model, layout, blocksize, max_density, example_input=example_input,
                    latency_table=latency_table, layers=names)
