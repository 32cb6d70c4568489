"""save_sparse / load_sparse: packed weights into a fresh instance of an unmodified model class.

The file is a dict (``torch.load(weights_only=True)`` reads it): ``"sparse"`` holds each
SparseLinear (layout, shape, format tensors, bias), ``"sparse_conv2d"`` each SparseConv2d (the
same plus its geometry), ``"dense"`` the state of everything else.
"""
from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from .formats import from_parts
from .conv import SparseConv2d
from .nn import SparseLinear, _set_submodule

_FORMAT_TAG = "sparsekern-sparse-model/1"


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
