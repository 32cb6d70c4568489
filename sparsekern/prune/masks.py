"""Masks: apply them, hold them through training, measure sparsity.

A mask set is a dict ``{layer name: bool tensor of the layer's weight shape}`` (True = kept),
as returned by :func:`sparsekern.prune.prune_model`.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

Masks = Dict[str, torch.Tensor]


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Every mask names a layer of ``model`` with a weight of the mask's shape."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{layer name: bool tensor}}, got "
                        f"{type(masks).__name__}")
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        m = modules.get(name)
        if m is None or not isinstance(getattr(m, "weight", None), torch.Tensor):
            raise ValueError(f"mask for layer {name!r}: {type(model).__name__} has no layer of "
                             f"that name with a weight")
        if not isinstance(mask, torch.Tensor) or mask.shape != m.weight.shape:
            got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask for layer {name!r} has shape {got}; expected the weight's "
                             f"shape {list(m.weight.shape)}")


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
    """{layer name: fraction of exact zeros in its weight} plus ``"total"`` over all of them."""
    from .layers import select_layers
    out: Dict[str, float] = {}
    zeros = total = 0
    for n, m in select_layers(model, layers).items():
        z = int((m.weight.detach() == 0).sum())
        out[n] = z / max(1, m.weight.numel())
        zeros += z
        total += m.weight.numel()
    out["total"] = zeros / max(1, total)
    return out


class MaskHolder:
    """Keeps pruned weights exactly zero while the model trains (the training callback).

    Three ways to use it from your own loop:

    * ``with MaskHolder(model, masks):`` — while inside, every optimizer step (of any
      optimizer, through torch's global step hook) re-applies the masks, and gradients of
      pruned weights are zeroed (so momentum/Adam state never grows there);
    * ``holder.attach(optimizer)`` / ``holder.detach()`` — the same, for one optimizer;
    * ``holder.step()`` after each ``optimizer.step()`` — no hooks at all.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        check_masks(model, masks)
        self.model = model
        self.masks = {n: m.to(torch.bool) for n, m in masks.items()}
        self._handles = []

    def apply(self) -> None:
        """Zero every pruned weight now (exactly 0)."""
        apply_masks(self.model, self.masks)

    def step(self) -> None:
        """Call after ``optimizer.step()`` in a loop that does not use :meth:`attach`."""
        self.apply()

    def attach(self, optimizer: Optional[torch.optim.Optimizer] = None) -> "MaskHolder":
        """Hook gradients and ``optimizer``'s steps (every optimizer's when None)."""
        self.detach()
        for name, mask in self.masks.items():
            w = self.model.get_submodule(name).weight
            if not w.requires_grad:  # a frozen layer: no gradient to mask (and no hook allowed)
                continue
            keep = mask.to(device=w.device)
            self._handles.append(w.register_hook(
                lambda g, keep=keep: g.masked_fill(~keep, 0.0)))
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

    def __enter__(self) -> "MaskHolder":
        return self.attach()

    def __exit__(self, *exc) -> bool:
        self.apply()
        self.detach()
        return False
