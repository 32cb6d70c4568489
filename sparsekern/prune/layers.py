"""Which layers can be pruned, their weight as a matrix, and the checks on ratios.

A prunable layer is an ``nn.Linear`` (weight [out, in]) or an ``nn.Conv2d`` (weight
[out, in/groups, kh, kw]). Pruning works on the weight as the matrix
``W.reshape(out, K)`` with K = in_features or in_channels/groups*kh*kw, the matrix that the
sparse formats pack (see sparsekern.conv for the im2col order).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional, Union

import torch
from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)

Ratio = Union[float, Mapping[str, float]]


def is_prunable(module: nn.Module) -> bool:
    return type(module) in PRUNABLE_TYPES


def prunable_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """{name: module} of every nn.Linear / nn.Conv2d, in module order."""
    return {name: m for name, m in model.named_modules() if is_prunable(m)}


def describe(module: nn.Module) -> str:
    return f"{type(module).__name__}"


def select_layers(model: nn.Module, layers: Optional[Iterable[str]] = None,
                  need_conv: bool = False) -> Dict[str, nn.Module]:
    """The layers to prune: ``layers`` (names) or every prunable layer.

    With ``need_conv`` (kernel granularity) the default is every nn.Conv2d, and a named
    nn.Linear is rejected. Raises ValueError for an unknown name, a name that is not a
    Linear/Conv2d, or a model with nothing to prune.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if layers is None:
        found = prunable_layers(model)
        if need_conv:
            found = {n: m for n, m in found.items() if isinstance(m, nn.Conv2d)}
        if not found:
            kinds = "nn.Conv2d (kernel granularity)" if need_conv else "nn.Linear or nn.Conv2d"
            raise ValueError(f"model {type(model).__name__} has no prunable layers: expected at "
                             f"least one {kinds}")
        return found
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers)
    if not names:
        raise ValueError("layers is empty: name at least one nn.Linear / nn.Conv2d to prune")
    modules = dict(model.named_modules())
    out: Dict[str, nn.Module] = {}
    for name in names:
        if name not in modules:
            raise ValueError(f"layer {name!r} does not exist in {type(model).__name__}; prunable "
                             f"layers are {list(prunable_layers(model))}")
        m = modules[name]
        if not is_prunable(m):
            raise ValueError(f"layer {name!r} is a {describe(m)}; only nn.Linear and nn.Conv2d "
                             f"can be pruned")
        if need_conv and not isinstance(m, nn.Conv2d):
            raise ValueError(f"layer {name!r} is a {describe(m)}; kernel granularity prunes whole "
                             f"kh x kw kernels of an nn.Conv2d")
        out[name] = m
    return out


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as [out, K] (a view): K = in_features or in_channels/groups*kh*kw."""
    W = module.weight
    return W.reshape(W.shape[0], -1)


def check_ratio(ratio, layer: Optional[str] = None) -> float:
    """A fraction of weights to remove: a number in [0, 1)."""
    where = f" for layer {layer!r}" if layer is not None else ""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio{where} must be a number in [0, 1), got {ratio!r}")
    r = float(ratio)
    if not (0.0 <= r < 1.0) or math.isnan(r):
        raise ValueError(f"ratio{where} must be in [0, 1) (the fraction of weights removed), "
                         f"got {ratio!r}")
    return r


def resolve_ratios(ratio: Ratio, names: Iterable[str]) -> Dict[str, float]:
    """One checked ratio per layer name: a number for all, or a {name: ratio} mapping."""
    names = list(names)
    if isinstance(ratio, Mapping):
        missing = [n for n in names if n not in ratio]
        if missing:
            raise ValueError(f"ratio has no entry for layer(s) {missing}; give a ratio for every "
                             f"pruned layer (or pass layers=...)")
        return {n: check_ratio(ratio[n], n) for n in names}
    if ratio is None:
        raise ValueError("ratio is required for this granularity (a number in [0, 1) or a "
                         "{layer: ratio} mapping)")
    r = check_ratio(ratio)
    return {n: r for n in names}


def layers_of_ratio(ratio: Ratio, layers) -> Optional[Iterable[str]]:
    """A {name: ratio} mapping names the layers when ``layers`` is not given."""
    if layers is None and isinstance(ratio, Mapping):
        return list(ratio)
    return layers
