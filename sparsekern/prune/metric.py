"""The quality metric a search calls: ``eval_fn(model) -> float``, checked where it is read."""
from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import nn


def evaluate(eval_fn: Callable[[nn.Module], float], model: nn.Module) -> float:
    """``float(eval_fn(model))`` for a real number, a one-element tensor or a NumPy scalar
    (NaN included: the searches treat it as the worst metric). Anything else raises a
    TypeError naming eval_fn and what it returned (``float('x')`` named neither)."""
    value = eval_fn(model)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        return float(value.detach())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise TypeError(f"eval_fn(model) must return a number (a float, e.g. validation accuracy), "
                    f"got {type(value).__name__} {shown}")
