"""Masks -> formats -> sparse layers, and saving / loading the converted model.

:func:`convert` swaps every pruned nn.Linear for a SparseLinear and every pruned nn.Conv2d
(groups=1) for a SparseConv2d. :func:`save_sparse` / :func:`load_sparse` extend
``sparsekern.save_sparse`` / ``load_sparse`` are sparsekern.save_sparse / load_sparse
(SparseLinear and SparseConv2d).
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from ..conv import SparseConv2d
from ..nn import SparseLinear, _set_submodule, choose_layout
from ..serialization import load_sparse, save_sparse  # noqa: F401  (re-exported)
from .layers import select_layers, weight_matrix
from .masks import apply_masks

log = logging.getLogger("sparsekern")

LAYOUTS = ("auto", "2:4", "bsr", "csc")


def convert(model: nn.Module, layout: str = "auto", blocksize=None,
            masks: Optional[Mapping[str, torch.Tensor]] = None,
            max_density: Optional[float] = None, layers=None, *, example_input=None,
            latency_table=None) -> nn.Module:
    """Swap pruned Linear / Conv2d layers for SparseLinear / SparseConv2d (in place).

    Args:
        model: the pruned model (its zeros are the pattern), or a model plus ``masks``.
        layout: "2:4", "bsr", "csc" or "auto" (sparsekern's choice per layer, as in
            sparsekern.sparsify: the format expected fastest for the weight's zeros, dense
            when none is).
        blocksize: (bm, bk) for "bsr" (e.g. the block granularity that was pruned).
        masks: applied first (pruned weights set to 0).
        max_density: pack bsr/csc only when the stored fraction is at most this.
        layers: names to convert (default every nn.Linear / nn.Conv2d).
        example_input, latency_table: for "auto": the input(s) to measure at, or a table
            from sparsekern.auto.build_table.
    Returns the model (or the new layer when ``model`` itself is a Linear/Conv2d). The
    decisions are in ``model.sparsekern_report`` ({name: (layout or "dense", reason)});
    grouped convolutions stay dense.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    if max_density is not None and not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density!r}")
    if masks is not None:
        apply_masks(model, masks)
    if layout == "auto":
        if blocksize is not None or max_density is not None:
            raise ValueError("layout='auto' chooses formats from measured latencies; blocksize "
                             "and max_density apply to layout='bsr'/'csc' only")
        from ..auto.choose import sparsify_auto
        return sparsify_auto(model, latency_table, example_input, layers=layers,
                             linear_only=example_input is None and latency_table is None)
    if example_input is not None or latency_table is not None:
        raise ValueError(f"example_input and latency_table apply to layout='auto' only; got "
                         f"layout={layout!r}")
    report: Dict[str, Tuple[str, str]] = {}
    result = model
    for name, mod in select_layers(model, layers).items():
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            report[name] = ("dense", f"grouped Conv2d (groups={mod.groups}) is kept dense")
            log.info("convert: %s stays dense (groups=%d)", name, mod.groups)
            continue
        chosen, why = choose_layout(weight_matrix(mod).detach(), layout, blocksize, max_density)
        report[name] = (chosen or "dense", why)
        if chosen is None:
            log.info("convert: %s stays dense (%s)", name, why)
            continue
        bs = blocksize if chosen == "bsr" else None
        new = (SparseConv2d.from_dense(mod, chosen, bs) if isinstance(mod, nn.Conv2d)
               else SparseLinear.from_dense(mod, chosen, bs))
        if name == "":
            result = new
        else:
            _set_submodule(model, name, new)
    result.sparsekern_report = report
    return result
