"""Which layers can be pruned, their weight as a matrix, and the checks on ratios.

A prunable layer is an ``nn.Linear`` (weight [out, in]), a transformers ``Conv1D`` (GPT-2;
weight stored [in, out]) or an ``nn.Conv2d`` (weight [out, in/groups, kh, kw]); the list
lives in sparsekern._layers. Pruning works on the weight as the [out, K] matrix that the
sparse formats pack (K = in_features or in_channels/groups*kh*kw; see sparsekern.conv for
the im2col order): :func:`weight_matrix` gives it as a view of the parameter (a Conv1D's
weight transposed), so in-place writes reach the real weight. Masks keep the parameter's
shape; :func:`to_matrix` / :func:`from_matrix` turn a mask or score tensor into the [out, K]
orientation and back.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Iterable, Mapping, Optional, Union

import torch
from torch import nn

# The layer accessors of this module's interface live in the core (one place for all).
from .. import _layers
from .._layers import tied_weights
from .._layers import (dims, from_matrix, in_features, is_linear, is_prunable,  # noqa: F401
                       kind, layer_types, looks_linear, skip_reason, to_matrix, weight_matrix)

#: The exact classes of torch itself that are prunable (transformers' Conv1D is recognised by
#: name, without importing transformers: see is_prunable).
PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)

Ratio = Union[float, Mapping[str, float]]

_log = logging.getLogger("sparsekern.prune")


def prunable_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """{name: module} of every nn.Linear / transformers Conv1D / nn.Conv2d, in module order."""
    return {name: m for name, m in model.named_modules() if is_prunable(m)}


def _untied(model: nn.Module, found: Dict[str, nn.Module]) -> Dict[str, nn.Module]:
    """``found`` without the layers whose weight is tied to another parameter (GPT-2's
    lm_head shares the token embedding: pruning it would prune the embedding, and
    ``sparsify`` leaves such a layer dense anyway). Logged at INFO; name such a layer in
    ``layers`` to prune it all the same."""
    tied = tied_weights(model)
    out = {}
    for name, m in found.items():
        others = [n for n in tied.get(id(getattr(m, "weight", None)), ())
                  if n != f"{name}.weight"]
        if others:
            _log.info("%s left out: its weight is tied to %s (name it in "
                      "layers= to prune it all the same)", name, ", ".join(others))
        else:
            out[name] = m
    return out


def default_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The layers pruned when none are named: every prunable layer whose weight is not tied
    to another parameter (may be empty; :func:`select_layers` raises then). Linear-like
    layers left out (nn.Linear subclasses such as nn.MultiheadAttention's out_proj,
    parametrized layers, other convolutions) are logged at INFO with the reason, and so are
    the weights of 3 or more dims outside any such layer (a mixture of experts' [E, out, in]
    parameter; see sparsekern._layers.weights_left_alone), which are not pruned."""
    for name, m in model.named_modules():
        if looks_linear(m) and not is_prunable(m):
            _log.info("%s left out: %s", name or type(model).__name__,
                      skip_reason(m))
        elif _layers.quantized_name(m) is not None:
            _log.info("%s left out: %s is %s", name or type(model).__name__,
                      _layers.quantized_name(m), _layers.QUANTIZED_NOTE)
    for name, why in _layers.weights_left_alone(model).items():
        _log.info("%s left out: %s", name, why)
    found = _untied(model, prunable_layers(model))
    for name in [n for n, m in found.items() if _empty_weight(m)]:
        _log.info("%s left out: %s", name, _empty_weight(found.pop(name)))
    return found


def _empty_weight(module: nn.Module) -> Optional[str]:
    """Why a layer with no weights (nn.Linear(in, 0)) has nothing to prune, else None."""
    why = _layers.empty_weight(module)
    return None if why is None else f"{why}: nothing to prune"


def check_not_reparametrized(name: str, module: nn.Module) -> None:
    """Reject a layer whose ``weight`` is not its own parameter but recomputed before every
    forward by a hook (torch.nn.utils.prune: weight_orig * weight_mask; weight_norm:
    weight_g, weight_v; spectral_norm: weight_orig / sigma): zeros written into it would be
    lost at the next call, and the model would run other weights than its masks say."""
    if "weight" in module._parameters or "weight" in module._buffers:
        return  # its own tensor: zeros written into it last
    torch_prune = hasattr(module, "weight_orig") and hasattr(module, "weight_mask")
    fix = (f"torch.nn.utils.prune.remove(model.get_submodule({name!r}), 'weight')"
           if torch_prune else "torch.nn.utils.remove_weight_norm / remove_spectral_norm, "
           "or torch.nn.utils.prune.remove")
    what = ("torch.nn.utils.prune's reparametrization (weight = weight_orig * weight_mask"
            if torch_prune else f"a reparametrization (weight derived from "
            f"{', '.join(module._parameters) or 'no parameter'}")
    raise ValueError(
        f"layer {name!r} carries {what}, recomputed before every forward), so zeros written "
        f"into its weight would not last; make it a plain weight first: {fix}")


def describe(module: nn.Module) -> str:
    return f"{type(module).__name__}"


_PACKED = ("packed by sparsekern.sparsify: prune the dense model before sparsify, or unpack a "
           "layer with layer.to_dense()")


def _is_packed(module: nn.Module) -> bool:
    from .._packed_module import PackedWeightModule
    return isinstance(module, PackedWeightModule)


def _packed_hint(model: nn.Module) -> str:
    """'; its 3 SparseLinear layers are packed by ...' for a sparsified model, else ''."""
    packed = [type(m).__name__ for m in model.modules() if _is_packed(m)]
    if not packed:
        return ""
    kinds = "/".join(sorted(set(packed)))
    return f"; its {len(packed)} {kinds} layers are {_PACKED}"


class _Selected(dict):
    """What :func:`select_layers` returns for named layers: {name: module}, and in
    ``aliases`` the later names of a module registered under several names that the caller
    used ({given name: the first name, the one used here}), for :func:`resolve_ratios`."""
    aliases: Dict[str, str] = {}


def select_layers(model: nn.Module, layers: Optional[Iterable[str]] = None,
                  need_conv: bool = False, writes: bool = False) -> Dict[str, nn.Module]:
    """The layers to prune: ``layers`` (names) or every prunable layer.

    With ``need_conv`` (kernel granularity) the default is every nn.Conv2d, and a named
    nn.Linear is rejected. Raises ValueError for an unknown name, a name that is not a
    Linear/Conv2d, or a model with nothing to prune; with ``writes`` (the caller writes
    zeros into the weights and runs the model) also for a layer under torch.nn.utils.prune
    (see :func:`check_not_reparametrized`). A later name of a module registered under
    several names (``m.b = m.a``) selects that module once, under its first name (the one
    ``named_modules()`` gives, which masks and reports use; logged at INFO). With ``writes``
    and no ``layers``, the packed layers left out are logged at INFO, as default_layers
    logs the other layers it leaves out.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if layers is None:
        found = default_layers(model)
        if writes:  # pruning: a packed layer is left as it is, so say so, as for the others
            for name, m in model.named_modules():
                if _is_packed(m):
                    _log.info("%s left out: it is a %s (layout %r) %s",
                              name or type(model).__name__, type(m).__name__, m.layout, _PACKED)
        if need_conv:
            found = {n: m for n, m in found.items() if isinstance(m, nn.Conv2d)}
        if not found:
            kinds = ("nn.Conv2d (kernel granularity)" if need_conv else
                     "nn.Linear or nn.Conv2d (or a transformers Conv1D)")
            left = sorted({f"{type(m).__name__} ({_layers.skip_reason(m)})"
                           for m in model.modules() if _layers.looks_linear(m)
                           and not _layers.is_prunable(m) and _layers.skip_reason(m)})
            left += [f"{n} ({why})" for n, why in _layers.weights_left_alone(model).items()]
            why = f"; left out: {'; '.join(left)}" if left else ""
            raise ValueError(f"model {type(model).__name__} has no prunable layers: expected at "
                             f"least one {kinds}; its layers are: {layer_types(model)}{why}"
                             f"{_packed_hint(model)}")
        for name, m in found.items():
            if writes:
                check_not_reparametrized(name, m)
        return found
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers)
    if not names:
        raise ValueError("layers is empty: name at least one nn.Linear / nn.Conv2d to prune")
    modules = dict(model.named_modules())
    aliases = _layers.canonical_names(model, names)
    for alias, first in aliases.items():
        _log.info("layer %r is another name for %r (one module registered under both "
                  "names); pruned once, as %r", alias, first, first)
    names = list(dict.fromkeys(aliases.get(n, n) for n in names))  # each module once
    out = _Selected()
    out.aliases = aliases
    for name in names:
        if name not in modules:
            raise ValueError(f"layer {name!r} does not exist in {type(model).__name__}; prunable "
                             f"layers are {list(prunable_layers(model))}")
        m = modules[name]
        if not is_prunable(m):
            why = f": {skip_reason(m)}" if looks_linear(m) else ""
            why = f": it is {_PACKED}" if _is_packed(m) else why
            quantized = _layers.quantized_name(m)  # torch names its class "Linear" too
            what = f"{quantized} ({_layers.QUANTIZED_NOTE})" if quantized else describe(m)
            raise ValueError(f"layer {name!r} is a {what}; only nn.Linear and nn.Conv2d "
                             f"can be pruned (and transformers Conv1D){why}")
        if need_conv and not isinstance(m, nn.Conv2d):
            raise ValueError(f"layer {name!r} is a {describe(m)}; kernel granularity prunes whole "
                             f"kh x kw kernels of an nn.Conv2d")
        if _empty_weight(m):
            raise ValueError(f"layer {name!r}: {_empty_weight(m)}; leave it out of layers")
        if writes:
            check_not_reparametrized(name, m)
        out[name] = m
    return out


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
    aliases = getattr(names, "aliases", None) or {}
    names = list(names)
    if isinstance(ratio, Mapping) and aliases:  # {'b': r} for a module also named 'a'
        keyed: Dict[str, object] = {}
        for key, r in ratio.items():
            first = aliases.get(key, key)
            if first in keyed and keyed[first][1] != r:
                raise ValueError(f"ratio gives {keyed[first][0]!r} {keyed[first][1]!r} and "
                                 f"{key!r} {r!r}, but they are one module registered under "
                                 f"both names; give it one ratio")
            keyed.setdefault(first, (key, r))
        ratio = {k: r for k, (_, r) in keyed.items()}
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
