"""prune_model: compute masks for a granularity and a criterion, and apply them."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from . import criteria
from .granularity import Channel, Fine, Kernel, parse
from .layers import (Ratio, from_matrix, layers_of_ratio, resolve_ratios, select_layers,
                     to_matrix)
from .masks import Masks, apply_masks, check_masks

SCOPES = ("layer", "global")


def prune_model(model: nn.Module, ratio: Ratio = None, granularity="fine", criterion: str = "l1",
                calib=None, layers=None, scope: str = "layer",
                masks: Optional[Mapping[str, torch.Tensor]] = None, apply: bool = True,
                example_input: Optional[torch.Tensor] = None, progress: bool = False):
    """Prune the Linear / Conv2d layers of ``model``.

    Args:
        model: any nn.Module (modified in place when ``apply``).
        ratio: fraction of weights removed, in [0, 1): one number, or {layer name: ratio}
            (which also selects the layers). Not needed for N:M (its ratio is 1 - N/M).
        granularity: "fine", "2:4" / "1:4" / "2:8" / any "N:M", (bm, bk) or "BMxBK" blocks
            (e.g. (32, 32), (1, 8), (8, 1)), "kernel" (Conv2d only) or "channel".
        criterion: "l1", "l2" or "wanda" for weight-level granularities; "l1", "l2",
            "bn_scale", "apoz" or "regression" for "channel" (see criteria.py).
        calib: calibration inputs (a tensor, a list of tensors or a DataLoader) for "wanda",
            "apoz" and "regression".
        layers: names of the layers to prune (default: every nn.Linear and nn.Conv2d; every
            nn.Conv2d for "kernel").
        scope: "layer" (each layer loses ``ratio`` of its weights) or "global" (one threshold
            over all selected layers; fine granularity with "l1"/"l2" only).
        masks: masks of an earlier round; weights pruned there stay pruned.
        apply: zero the pruned weights in place (else only return the masks).
        example_input: for "channel": an input to trace shapes with (default: first calib
            batch).
    Returns:
        {layer name: bool mask of the weight's shape (True = kept)}; for "channel" the
        :class:`~sparsekern.prune.channel.ChannelPruneReport` (channels are removed
        physically, there is nothing to mask).
    """
    g = parse(granularity)
    if isinstance(g, Channel):
        from .channel import channel_prune
        return channel_prune(model, ratio, example_input=example_input, criterion=criterion,
                             calib=calib, layers=layers, progress=progress)
    criteria.check_criterion(criterion, channel=False)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    modules = select_layers(model, layers_of_ratio(ratio, layers),
                            need_conv=isinstance(g, Kernel))
    if g.fixed_ratio is not None:
        if ratio is not None:
            for name, r in resolve_ratios(ratio, modules).items():
                if abs(r - g.fixed_ratio) > 1e-9:
                    raise ValueError(f"ratio {r} for layer {name!r} contradicts granularity "
                                     f"'{g}', which removes exactly {g.fixed_ratio:g}; leave "
                                     f"ratio=None")
        ratios = {n: g.fixed_ratio for n in modules}
    else:
        ratios = resolve_ratios(ratio, modules)
    for name, m in modules.items():
        g.check(name, m)
    if masks is not None:
        check_masks(model, masks)
    norms = {}
    if criterion in criteria.NEEDS_CALIB:
        if calib is None:
            raise ValueError(f"criterion {criterion!r} needs calibration data (calib=...)")
        norms = criteria.input_column_norms(model, modules, calib)

    scores: Dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        s = criteria.weight_scores(criterion, m, norms.get(name))
        if masks is not None and name in masks:
            s = s.masked_fill(~masks[name].to(device=s.device, dtype=torch.bool), float("-inf"))
        scores[name] = to_matrix(m, s)  # [out, K] orientation: N:M groups run along K

    if scope == "global":
        if not isinstance(g, Fine) or criterion == "wanda" or isinstance(ratio, Mapping):
            raise ValueError("scope='global' needs granularity 'fine', criterion 'l1' or 'l2' "
                             "and one ratio for all layers")
        new = _global_fine(scores, ratios[next(iter(modules))])
    else:
        reduce = criteria.group_reduction(criterion)
        new = {name: g.mask(m, scores[name], ratios[name], name, reduce,
                            per_row=criterion == "wanda")
               for name, m in modules.items()}
    # Back to each weight's own shape (a Conv1D's mask is transposed back to [in, out]).
    new = {name: from_matrix(modules[name], k).contiguous() for name, k in new.items()}
    if masks is not None:
        for name in new:
            if name in masks:
                new[name] = new[name] & masks[name].to(device=new[name].device, dtype=torch.bool)
    if apply:
        apply_masks(model, new)
    return new


def _global_fine(scores: Dict[str, torch.Tensor], ratio: float) -> Masks:
    flat = torch.cat([s.flatten().float().cpu() for s in scores.values()])
    k = min(flat.numel(), int(round(ratio * flat.numel())))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k:
        keep[torch.argsort(flat, stable=True)[:k]] = False
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.numel()].reshape(s.shape).to(s.device)
        start += s.numel()
    return out
