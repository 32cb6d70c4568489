"""Masks -> formats -> sparse layers, and saving / loading the converted model.

:func:`convert` swaps every pruned nn.Linear for a SparseLinear and every pruned nn.Conv2d
(groups=1) for a SparseConv2d. :func:`save_sparse` / :func:`load_sparse` extend
``sparsekern.save_sparse`` / ``load_sparse`` (which know SparseLinear only) with
SparseConv2d; the file is the same dict plus a ``"sparse_conv2d"`` entry, readable with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..conv import SparseConv2d
from ..formats import from_parts
from ..nn import SparseLinear, _set_submodule, choose_layout
from ..serialization import _FORMAT_TAG
from .layers import select_layers, weight_matrix
from .masks import apply_masks

log = logging.getLogger("sparsekern")

LAYOUTS = ("auto", "2:4", "bsr", "csc")


def convert(model: nn.Module, layout: str = "auto", blocksize=None,
            masks: Optional[Mapping[str, torch.Tensor]] = None,
            max_density: Optional[float] = None, layers=None) -> nn.Module:
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


# -- save / load -----------------------------------------------------------------------------

def _conv_entry(mod: SparseConv2d) -> dict:
    entry = mod.get_extra_state()
    entry.update(values=mod.values.detach(), indices=mod.indices, offsets=mod.offsets,
                 bias=None if mod.bias is None else mod.bias.detach())
    return entry


def save_sparse(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Save ``model`` with every SparseLinear and SparseConv2d packed (plain tensors/ints/strs)."""
    linear, conv = {}, {}
    for name, mod in model.named_modules():
        if isinstance(mod, SparseLinear):
            linear[name] = {"layout": mod.layout, "shape": [mod.out_features, mod.in_features],
                            "values": mod.values.detach(), "indices": mod.indices,
                            "offsets": mod.offsets,
                            "bias": None if mod.bias is None else mod.bias.detach()}
        elif isinstance(mod, SparseConv2d):
            conv[name] = _conv_entry(mod)
    if "" in linear or "" in conv:
        raise ValueError("save_sparse needs a model that contains the sparse layers, not a bare "
                         "sparse layer (save its state_dict instead)")
    prefixes = tuple(n + "." for n in list(linear) + list(conv))
    dense = {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    torch.save({"format": _FORMAT_TAG, "sparse": linear, "sparse_conv2d": conv, "dense": dense},
               path)


def _existing(model: nn.Module, name: str, kinds, what: str) -> nn.Module:
    try:
        old = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the saved sparse layer {name!r} does not exist in "
                         f"{type(model).__name__}") from None
    if not isinstance(old, kinds):
        raise ValueError(f"the saved sparse layer {name!r} is a {what}, but the model has a "
                         f"{type(old).__name__} there")
    return old


def load_sparse(model: nn.Module, path: Union[str, os.PathLike], map_location=None) -> nn.Module:
    """Load a file from :func:`save_sparse` (or sparsekern.save_sparse) into a fresh model.

    Each saved sparse layer replaces the nn.Linear / nn.Conv2d of the same name (whose
    shape and geometry must match); the rest of the state is loaded strictly.
    """
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT_TAG:
        raise ValueError(f"{path} is not a file written by sparsekern.save_sparse")
    linear, conv = blob.get("sparse", {}), blob.get("sparse_conv2d", {})
    for name, e in linear.items():
        old = _existing(model, name, (nn.Linear, SparseLinear), "Linear")
        if [old.out_features, old.in_features] != list(e["shape"]):
            raise ValueError(f"layer {name!r}: saved shape {list(e['shape'])} but the model has "
                             f"[{old.out_features}, {old.in_features}]")
        fmt = from_parts(e["layout"], e["values"], e["indices"], e["offsets"], e["shape"])
        _set_submodule(model, name, SparseLinear(fmt, e["bias"]))
    for name, e in conv.items():
        old = _existing(model, name, (nn.Conv2d, SparseConv2d), "Conv2d")
        saved = [e["out_channels"], e["in_channels"], *e["kernel_size"]]
        have = [old.out_channels, old.in_channels, *old.kernel_size]
        if saved != have:
            raise ValueError(f"layer {name!r}: saved Conv2d [out, in, kh, kw] = {saved} but the "
                             f"model has {have}")
        kh, kw = e["kernel_size"]
        fmt = from_parts(e["layout"], e["values"], e["indices"], e["offsets"],
                         (e["out_channels"], e["in_channels"] * kh * kw))
        new = SparseConv2d(fmt, e["in_channels"], e["kernel_size"], e["stride"], e["padding"],
                           e["dilation"], e["bias"], e["padding_mode"])
        _set_submodule(model, name, new)
    missing, unexpected = model.load_state_dict(blob["dense"], strict=False)
    prefixes = tuple(n + "." for n in list(linear) + list(conv))
    missing = [k for k in missing if not k.startswith(prefixes)]
    if missing or unexpected:
        raise ValueError(f"state does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model
