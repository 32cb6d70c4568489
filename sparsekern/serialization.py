"""save_sparse / load_sparse: packed weights into a fresh instance of an unmodified model class."""
from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from .formats import from_parts
from .nn import SparseLinear, _set_submodule

_FORMAT_TAG = "sparsekern-sparse-model/1"


def save_sparse(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Save ``model``'s state with every SparseLinear's packed weight and layout.

    The file is a plain dict of tensors, strings and ints (``torch.load(weights_only=True)``
    reads it): the dense state of everything else, plus per sparse layer its layout, shape
    and format tensors.
    """
    sparse = {}
    for name, mod in model.named_modules():
        if isinstance(mod, SparseLinear):
            sparse[name] = {"layout": mod.layout, "shape": [mod.out_features, mod.in_features],
                            "values": mod.values.detach(), "indices": mod.indices,
                            "offsets": mod.offsets,
                            "bias": None if mod.bias is None else mod.bias.detach()}
    prefixes = tuple(n + "." for n in sparse)
    dense_state = {k: v for k, v in model.state_dict().items()
                   if not (k.startswith(prefixes) or k in sparse)}
    torch.save({"format": _FORMAT_TAG, "sparse": sparse, "dense": dense_state}, path)


def load_sparse(model: nn.Module, path: Union[str, os.PathLike], map_location=None) -> nn.Module:
    """Load a file written by save_sparse into ``model`` (a fresh, dense instance).

    Each saved sparse layer replaces the nn.Linear of the same name; the rest of the state
    is loaded strictly. Returns the model (modified in place).
    """
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT_TAG:
        raise ValueError(f"{path} is not a file written by sparsekern.save_sparse")
    for name, entry in blob["sparse"].items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the saved sparse layer {name!r} does not exist in "
                             f"{type(model).__name__}") from None
        if not isinstance(old, (nn.Linear, SparseLinear)):
            raise ValueError(f"the saved sparse layer {name!r} is a Linear, but the model has a "
                             f"{type(old).__name__} there")
        if [old.out_features, old.in_features] != list(entry["shape"]):
            raise ValueError(f"layer {name!r}: saved shape {entry['shape']} but the model has "
                             f"[{old.out_features}, {old.in_features}]")
        fmt = from_parts(entry["layout"], entry["values"], entry["indices"], entry["offsets"],
                         entry["shape"], validate=True)
        new = SparseLinear(fmt, entry["bias"])
        if name == "":
            raise ValueError("load_sparse needs a model that contains the layers, not a bare Linear")
        _set_submodule(model, name, new)
    missing, unexpected = model.load_state_dict(blob["dense"], strict=False)
    sparse_prefixes = tuple(n + "." for n in blob["sparse"])
    missing = [k for k in missing if not k.startswith(sparse_prefixes)]
    if missing or unexpected:
        raise ValueError(f"state does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model
