"""Masks: apply them, hold them through training, measure sparsity.

A mask set is a dict ``{layer name: bool tensor of the layer's weight shape}`` (True = kept),
as returned by :func:`sparsekern.prune.prune_model`.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from .. import _layers

Masks = Dict[str, torch.Tensor]


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Every mask names a layer of ``model`` with a weight of the mask's shape."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{layer name: bool tensor}}, got "
                        f"{type(masks).__name__}")
    from .._packed_module import PackedWeightModule
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        m = modules.get(name)
        if isinstance(m, PackedWeightModule):
            raise ValueError(_packed_mask_message(name, m) + _stricter_mask_note(m, mask))
        if m is None or not isinstance(getattr(m, "weight", None), torch.Tensor):
            hint = ("; it is a torch.compile wrapper, whose layers are named '_orig_mod.<name>': "
                    "use the masks with the model it wraps (model._orig_mod)"
                    if _layers.compiled_inner(model) is not None else "")
            raise ValueError(f"mask for layer {name!r}: {type(model).__name__} has no layer of "
                             f"that name with a weight{hint}")
        if not isinstance(mask, torch.Tensor) or mask.shape != m.weight.shape:
            got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask for layer {name!r} has shape {got}; expected the weight's "
                             f"shape {list(m.weight.shape)}")
        _check_zero_one(name, mask)


def _packed_mask_message(name: str, m: nn.Module) -> str:
    """The error for a mask given for a packed layer, true for its layout: a layout that
    stores only nonzeros (csc, sell) keeps pruned weights at zero by not storing them; one
    that stores zeros (zeros inside a kept BSR block, the spare slot of an N:M group) trains
    them like every stored value, and only :class:`StoredZeroHolder` (what fine_tune and
    distill attach) keeps them at zero."""
    from ..formats import layouts
    layout = getattr(m, "layout", None)
    try:
        spec = layouts.get(layout)
    except (ValueError, TypeError):
        spec = None
    values = m._parameters.get("values")
    n_zero = (int((values.detach() == 0).sum()) if isinstance(values, torch.Tensor)
              and values.is_floating_point() and values.device.type != "meta" else 0)
    if spec is not None and spec.blocked:
        where = "the zeros inside its kept blocks"
    elif spec is not None and spec.group is not None:
        n, g = spec.group
        where = (f"the stored slot of each all-zero group of {g} along K" if n == 1 else
                 f"the spare slots of its groups of {g} along K with fewer than {n} nonzeros")
    else:
        where = "zeros among its stored values"
    head = (f"mask for layer {name!r}: got a mask for a packed {type(m).__name__} "
            f"(sparsekern.sparsify, layout {layout!r}); expected masks for dense layers only")
    if n_zero == 0 and spec is not None and not spec.blocked and spec.group is None:
        return (f"{head}. Layout {layout!r} stores only the nonzeros: its pruned weights are "
                f"not stored, so they stay zero without a mask")
    return (f"{head}. Layout {layout!r} can store zeros ({where}; this layer stores {n_zero} "
            f"now) "
            f"and trains them like every stored value, so an optimizer step makes them "
            f"nonzero and a mask cannot hold them: prune.StoredZeroHolder keeps them at zero "
            f"(`with prune.StoredZeroHolder(model):` in your own loop); prune.fine_tune and "
            f"prune.distill attach it with masks=None or masks of the dense layers (not with "
            f"masks={{}}, nor does prune.train)")


def _stricter_mask_note(m: nn.Module, mask) -> str:
    """The part of the packed-layer error for a mask that would prune more than the layer
    holds: the user wants further pruning, which a packed layer cannot take in place."""
    try:
        W = m.weight.to_dense()
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(W.shape):
            return ""
        lost = int(((W != 0) & (mask.to(W.device) == 0)).sum())
        have = int((W != 0).sum())
    except Exception:  # a mask too odd to compare: the main message stands alone
        return ""
    if lost == 0:
        return ""
    return (f". This mask would also zero {lost} of the layer's {have} nonzero weights: to "
            f"prune further, unpack it (layer.to_dense() is an equivalent dense layer), prune "
            f"that and sparsify again")


def _check_zero_one(name: str, mask: torch.Tensor) -> None:
    """A mask that is not bool must hold only 0s and 1s (torch.nn.utils.prune's float
    weight_mask does): a mask of scores would read as "nonzero = kept"."""
    if mask.dtype == torch.bool:
        return
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        raise ValueError(f"mask for layer {name!r} has dtype {mask.dtype} with values other than "
                         f"0 and 1 (e.g. {mask[bad].flatten()[0].item():g}); expected a bool mask "
                         f"(True = kept) or one of 0s and 1s")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Set every pruned weight (mask False) to exactly 0, in place; returns the model."""
    check_masks(model, masks)
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        w.masked_fill_(~mask.to(device=w.device, dtype=torch.bool), 0.0)
    return model


def masks_from_zeros(model: nn.Module, layers=None) -> Masks:
    """Masks of the zeros already in the weights (``weight != 0``) of Linear/Conv2d layers."""
    from .layers import select_layers
    return {n: (m.weight.detach() != 0) for n, m in select_layers(model, layers).items()}


def sparsity(model: nn.Module, layers=None) -> Dict[str, float]:
    """{layer name: fraction of exact zeros in its weight} plus ``"total"`` over all of them
    (``layers``: names, or one name as a str; default every prunable or packed layer).
    Packed layers (after ``sparsekern.sparsify``) count too: the zeros of their weight
    matrix, stored or not."""
    from .._packed_module import PackedWeightModule
    from .layers import select_layers
    all_packed = {n: m for n, m in model.named_modules() if isinstance(m, PackedWeightModule)}
    if layers is None:
        packed = all_packed
        try:
            dense = select_layers(model, None)
        except ValueError:  # nothing dense to prune: fine when every such layer is packed
            if not packed:
                raise
            dense = {}
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        packed = {n: all_packed[n] for n in names if n in all_packed}
        rest = [n for n in names if n not in packed]
        dense = select_layers(model, rest) if rest else {}
    out: Dict[str, float] = {}
    zeros = total = 0
    for n, m in model.named_modules():
        if n in dense:
            w = dense[n].weight.detach()
        elif n in packed:
            w = m.weight.to_dense().detach()
        else:
            continue
        z = int((w == 0).sum())
        out[n] = z / max(1, w.numel())
        zeros += z
        total += w.numel()
    out["total"] = zeros / max(1, total)
    return out


class _ZeroHolder:
    """Holds some entries of some parameters at exactly zero through training: their
    gradients are zeroed (so momentum/Adam state never grows there) and they are set to 0
    again after every optimizer step. Subclasses give the (parameter, keep mask) pairs."""

    def __init__(self):
        self._handles = []

    def _pairs(self):
        raise NotImplementedError

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every held entry now (exactly 0)."""
        for p, keep in self._pairs():
            p.masked_fill_(~keep.to(device=p.device, dtype=torch.bool), 0.0)

    def step(self) -> None:
        """Call after ``optimizer.step()`` in a loop that does not use :meth:`attach`."""
        self.apply()

    def attach(self, optimizer: Optional[torch.optim.Optimizer] = None):
        """Hook gradients and ``optimizer``'s steps (every optimizer's when None)."""
        self.detach()
        for p, keep in self._pairs():
            if not p.requires_grad:  # a frozen layer: no gradient to mask (and no hook allowed)
                continue
            keep = keep.to(device=p.device, dtype=torch.bool)
            self._handles.append(p.register_hook(lambda g, keep=keep: g.masked_fill(~keep, 0.0)))
        post = lambda *args, **kwargs: self.apply()  # noqa: E731
        if optimizer is None:
            from torch.optim.optimizer import register_optimizer_step_post_hook
            self._handles.append(register_optimizer_step_post_hook(post))
        else:
            self._handles.append(optimizer.register_step_post_hook(post))
        self.apply()
        return self

    def detach(self) -> None:
        """Remove the hooks (the weights keep their current values)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc) -> bool:
        self.apply()
        self.detach()
        return False


class MaskHolder(_ZeroHolder):
    """Keeps pruned weights exactly zero while the model trains (the training callback).

    Three ways to use it from your own loop:

    * ``with MaskHolder(model, masks):`` — while inside, every optimizer step (of any
      optimizer, through torch's global step hook) re-applies the masks, and gradients of
      pruned weights are zeroed (so momentum/Adam state never grows there);
    * ``holder.attach(optimizer)`` / ``holder.detach()`` — the same, for one optimizer;
    * ``holder.step()`` after each ``optimizer.step()`` — no hooks at all.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        super().__init__()
        check_masks(model, masks)
        self.model = model
        self.masks = {n: m.to(torch.bool) for n, m in masks.items()}

    def _pairs(self):
        check_masks(self.model, self.masks)  # a layer replaced meanwhile: the named error
        return [(self.model.get_submodule(n).weight, m) for n, m in self.masks.items()]


class StoredZeroHolder(_ZeroHolder):
    """Keeps the zeros that packed layers store exactly zero while the model trains.

    A packed layer (SparseLinear, SparseConv2d) trains every value its format stores, and
    some formats store zeros a pruning left: those inside a kept BSR block, the spare slot of
    a 2:4 group with fewer than two nonzeros. Without this holder, fine-tuning a sparsified
    model revives them. Constructed from the model as it is: every stored value that is
    exactly 0 now is held (``values`` [format-specific shape] of each layer). Used like
    :class:`MaskHolder` (``with``, ``attach``/``detach``, ``step``); :func:`distill` holds
    them always.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        from .._packed_module import PackedWeightModule
        self.model = model
        self.keep: Dict[str, torch.Tensor] = {}
        for name, m in model.named_modules():
            v = m._parameters.get("values") if isinstance(m, PackedWeightModule) else None
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                zero = v.detach() == 0
                if bool(zero.any()):
                    self.keep[name] = ~zero

    def _pairs(self):
        pairs = []
        for n, k in self.keep.items():
            v = self.model.get_submodule(n).values
            if v.shape != k.shape:
                raise ValueError(f"layer {n!r}: its values now have shape {list(v.shape)}, "
                                 f"not the held {list(k.shape)} (the layer's pattern changed "
                                 f"while held; build a new StoredZeroHolder)")
            pairs.append((v, k))
        return pairs
