"""Moving N:M masks during distillation: SR-STE (sparse-refined straight-through estimator).

The masked mode of :func:`sparsekern.prune.distill` holds the pruning masks: the kept weights
learn, the pruned ones stay 0. With ``mask_update=MaskUpdate()`` the masks move instead
(Zhou et al. 2021, "Learning N:M fine-grained structured sparse neural networks from
scratch"):

* every masked layer keeps dense *shadow* weights (its ``weight`` parameter, starting from
  the pruned weights: 0 where pruned), and runs forward with ``shadow * mask``;
* the gradient goes straight through the mask to every shadow weight, plus SR-STE's decay
  ``decay * shadow`` on the pruned ones (so a pruned weight only grows back when the loss
  keeps asking for it);
* every ``every`` steps each group of ``m`` consecutive weights along the input dim keeps
  its ``n`` largest shadow magnitudes (ties keep the current mask);
* for the last ``freeze`` fraction of the steps the masks are frozen and the pruned
  gradients masked (the masked mode); at the end the weights are ``shadow * mask``: exact
  zeros in an exact N:M pattern.

Start from a one-shot solution (SparseGPT): its pruned weights are 0, so the first masks
are SparseGPT's, and a weight enters a group only when the straight-through gradient has
grown it past the smallest kept one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _layers


@dataclass(frozen=True)
class MaskUpdate:
    """Settings of the moving masks of :func:`sparsekern.prune.distill` (SR-STE).

    Attributes:
        n, m: keep ``n`` of every ``m`` consecutive weights along the input dim (2:4).
        every: re-pick the masks every this many steps (>= 1).
        decay: SR-STE's lambda_w: ``decay * w`` is added to the gradient of every pruned
            shadow weight (>= 0; 0: plain STE).
        freeze: fraction in [0, 1) of the final steps run with the masks frozen.
    """
    n: int = 2
    m: int = 4
    every: int = 1
    decay: float = 2e-4
    freeze: float = 0.25

    def __post_init__(self):
        for name in ("n", "m", "every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MaskUpdate.{name} must be a positive int, got {v!r}")
        if self.n >= self.m:
            raise ValueError(f"MaskUpdate.n must be below m (keep n of every m), got "
                             f"n={self.n}, m={self.m}")
        if not (isinstance(self.decay, (int, float)) and self.decay >= 0):
            raise ValueError(f"MaskUpdate.decay must be a number >= 0, got {self.decay!r}")
        if not (isinstance(self.freeze, (int, float)) and 0 <= self.freeze < 1):
            raise ValueError(f"MaskUpdate.freeze must be in [0, 1), got {self.freeze!r}")

    def moving_steps(self, steps: int) -> int:
        """How many of ``steps`` steps run with moving masks (the rest frozen)."""
        return steps - int(round(self.freeze * steps))


def nm_mask(weight: torch.Tensor, n: int, m: int, prefer: torch.Tensor = None) -> torch.Tensor:
    """Bool mask of ``weight``'s shape [out, ...] keeping the ``n`` largest magnitudes of every
    ``m`` consecutive weights of each row flattened to [out, K] (K a multiple of m); on a tie
    the weights where ``prefer`` (bool, same shape) is True win."""
    w = _layers.flat2d(weight.detach()).abs().float()
    # Exact order on (magnitude, prefer): the bits of a float32 >= 0 order as its value.
    key = w.view(torch.int32).to(torch.int64) * 2
    if prefer is not None:
        key = key + prefer.reshape(w.shape).to(torch.int64)
    g = key.reshape(w.shape[0], -1, m)
    top = g.topk(n, dim=-1).indices
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(weight.shape)


def is_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive weights along the flattened input dim has at
    most ``n`` nonzeros (K a multiple of m)."""
    w = _layers.flat2d(weight.detach())
    return bool(((w != 0).reshape(w.shape[0], -1, m).sum(-1) <= n).all())


class _STEMask(nn.Module):
    """Parametrization ``w -> w * mask``: gradient straight through (``ste``) or masked."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.clone())
        self.ste = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.ste:  # value w * mask (exact zeros), gradient 1 everywhere
            return w - (w * ~self.mask).detach()
        return w * self.mask


class MovingMasks:
    """The SR-STE state of one :func:`distill` run over ``masks``' layers of ``model``."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor], cfg: MaskUpdate):
        self.model, self.cfg, self.names = model, cfg, list(masks)
        self.params: Dict[str, _STEMask] = {}
        self._hooks = []
        for name in self.names:
            mod = model.get_submodule(name)
            w = mod.weight
            k = _layers.dims(mod)[1] if w.dim() >= 2 else 0
            if w.dim() < 2 or k % cfg.m:
                raise ValueError(f"mask_update: layer {name!r} has weight shape "
                                 f"{list(w.shape)}; {cfg.n}:{cfg.m} masks need its input "
                                 f"dim (flattened) to be a multiple of {cfg.m}")
            # Groups run along the input dim of the [out, K] matrix (a transformers Conv1D
            # stores [in, out]).
            keep = _layers.to_matrix(mod, masks[name].detach()).to(torch.bool)
            most = int(keep.reshape(keep.shape[0], -1, cfg.m).sum(-1).max()) if keep.numel() else 0
            if most > cfg.n:
                raise ValueError(f"mask_update: the mask of layer {name!r} is not {cfg.n}:"
                                 f"{cfg.m} (a group of {cfg.m} keeps {most}); MaskUpdate moves "
                                 f"{cfg.n}:{cfg.m} masks only: prune with granularity="
                                 f"'{cfg.n}:{cfg.m}' first, or pass mask_update=None")

    def _nm(self, mod: nn.Module, w: torch.Tensor, prefer: torch.Tensor) -> torch.Tensor:
        """nm_mask of ``w`` (the weight's shape) along the input dim of the [out, K] matrix."""
        keep = nm_mask(_layers.to_matrix(mod, w), self.cfg.n, self.cfg.m,
                       prefer=_layers.to_matrix(mod, prefer))
        return _layers.from_matrix(mod, keep).contiguous()

    def attach(self, masks: Mapping[str, torch.Tensor]) -> "MovingMasks":
        """Start from ``masks`` re-picked to N:M (ties keep them), parametrize the layers."""
        for name in self.names:
            mod = self.model.get_submodule(name)
            keep = masks[name].to(device=mod.weight.device, dtype=torch.bool)
            with torch.no_grad():
                mod.weight.masked_fill_(~keep, 0.0)
            p = _STEMask(self._nm(mod, mod.weight, keep))
            parametrize.register_parametrization(mod, "weight", p, unsafe=True)
            self.params[name] = p
            orig = mod.parametrizations.weight.original
            if self.cfg.decay > 0 and orig.requires_grad:
                self._hooks.append(orig.register_hook(
                    lambda g, p=p, o=orig: g + self.cfg.decay * (o.detach() * ~p.mask)
                    if p.ste else g))
        return self

    @torch.no_grad()
    def update(self) -> None:
        """Re-pick every mask from the shadow weights' magnitudes (ties keep the mask)."""
        for name, p in self.params.items():
            mod = self.model.get_submodule(name)
            p.mask.copy_(self._nm(mod, mod.parametrizations.weight.original, p.mask))

    def freeze(self) -> None:
        """Freeze the masks: masked gradients from now on (no decay)."""
        for p in self.params.values():
            p.ste = False

    def step_done(self, step: int, steps: int) -> None:
        """After optimizer step ``step`` (1-based) of ``steps``: re-pick or freeze."""
        moving = self.cfg.moving_steps(steps)
        if step < moving and step % self.cfg.every == 0:
            self.update()
        elif step == moving:
            self.freeze()

    def finish(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Leave ``shadow * mask`` as each plain weight (exact zeros), remove the
        parametrizations, and write the final masks into ``masks`` (a dict) in place."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for name, p in self.params.items():
            mod = self.model.get_submodule(name)
            final = p.mask.clone()
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
            with torch.no_grad():
                mod.weight.masked_fill_(~final, 0.0)
            if isinstance(masks, dict):
                masks[name] = final.to(masks[name].device)
        self.params = {}
