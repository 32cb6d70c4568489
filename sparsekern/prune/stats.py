"""Model size and cost: parameters and multiply-accumulates (MACs) of one forward pass."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..conv import SparseConv2d
from ..nn import SparseLinear
from .layers import is_linear
from . import calibration


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameter elements (``nonzero``: only those that are not exactly 0)."""
    if nonzero:
        return sum(int((p.detach() != 0).sum()) for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def _layer_macs(mod: nn.Module, out: torch.Tensor, nonzero: bool) -> int:
    if isinstance(mod, nn.Conv2d):
        per_out = mod.weight[0].numel()  # in_channels/groups * kh * kw
        if nonzero:  # average nonzeros per output channel
            return int((mod.weight.detach() != 0).sum()) * (out.numel() // out.shape[-3])
        return out.numel() * per_out
    if isinstance(mod, nn.Linear) or is_linear(mod):  # transformers Conv1D included
        rows = out.numel() // out.shape[-1]
        if nonzero:
            return int((mod.weight.detach() != 0).sum()) * rows
        return rows * mod.weight.numel()
    if isinstance(mod, SparseLinear):
        return int((mod.values.detach() != 0).sum()) * (out.numel() // out.shape[-1])
    if isinstance(mod, SparseConv2d):
        return int((mod.values.detach() != 0).sum()) * (out.numel() // out.shape[-3])
    return 0


def count_macs(model: nn.Module, example_input: torch.Tensor,
               nonzero: bool = False) -> Dict[str, int]:
    """MACs of the Linear/Conv2d (transformers Conv1D too) and sparse layers for one call on
    ``example_input``.

    Returns {layer name: MACs} plus ``"total"``. ``nonzero`` counts only nonzero weights
    (what a kernel that skips zeros has to do); sparse layers always count their nonzeros.
    """
    macs: Dict[str, int] = {}
    kinds = (nn.Conv2d, nn.Linear, SparseLinear, SparseConv2d)
    handles = [m.register_forward_hook(
        lambda mod, args, out, n=n: macs.__setitem__(n, macs.get(n, 0) +
                                                     _layer_macs(mod, out, nonzero)))
        for n, m in model.named_modules() if isinstance(m, kinds) or is_linear(m)]
    try:
        calibration.run(model, example_input, what="example_input")
    finally:
        for h in handles:
            h.remove()
    macs["total"] = sum(macs.values())
    return macs
