"""Calibration data: run a model on a few batches and name the layer when a batch does not fit.

``calib`` is one of: a tensor (one batch of model inputs), a list/tuple of such tensors, or
an iterable (e.g. a DataLoader) whose items are tensors or (inputs, targets) pairs — the
first element is what the model is called with.
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional

import torch
from torch import nn


def batches(calib, what: str = "calib") -> List[torch.Tensor]:
    """The calibration batches as a list of input tensors (raises on anything else)."""
    if calib is None:
        raise ValueError(f"{what} is required: give calibration inputs (a tensor, a list of "
                         f"tensors or a DataLoader)")
    if isinstance(calib, torch.Tensor):
        items = [calib]
    else:
        try:
            items = list(calib)
        except TypeError:
            raise TypeError(f"{what} must be a tensor, a list of tensors or a DataLoader, got "
                            f"{type(calib).__name__}") from None
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)) and item:
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"{what} batch {i} is a {type(item).__name__}; expected a tensor of "
                            f"model inputs (or an (inputs, targets) pair)")
        out.append(item)
    if not out:
        raise ValueError(f"{what} is empty: give at least one batch of calibration inputs")
    return out


def _push(stack: List[str], name: str):
    def hook(mod, args):
        stack.append(name)  # returns None: the input is left unchanged
    return hook


def _pop(stack: List[str]):
    def hook(mod, args, out):
        if stack:
            stack.pop()  # returns None: the output is left unchanged
    return hook


@contextlib.contextmanager
def _current_layer_tracker(model: nn.Module):
    """Yields a list whose last item is the name of the innermost module running."""
    stack: List[str] = []
    handles = []
    for name, m in model.named_modules():
        if name == "":
            continue
        handles.append(m.register_forward_pre_hook(_push(stack, name), prepend=True))
        handles.append(m.register_forward_hook(_pop(stack)))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def run(model: nn.Module, calib, what: str = "calib",
        call: Optional[Callable[[torch.Tensor], object]] = None) -> None:
    """Run ``model`` (or ``call``) on every calibration batch without gradients, in eval mode.

    A batch that does not fit raises ValueError naming the batch, its shape and the layer
    that rejected it.
    """
    xs = batches(calib, what)
    call = model if call is None else call
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, x in enumerate(xs):
                with _current_layer_tracker(model) as stack:
                    try:
                        call(x)
                    except (RuntimeError, ValueError, IndexError) as e:
                        layer = stack[-1] if stack else None
                        where = (f"layer {layer!r} ({type(model.get_submodule(layer)).__name__})"
                                 if layer else f"the model {type(model).__name__}")
                        raise ValueError(f"{what} batch {i} has shape {list(x.shape)}, which "
                                         f"does not fit {where}: {e}") from e
    finally:
        model.train(was_training)
