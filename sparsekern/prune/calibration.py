"""Calibration data: run a model on a few batches and name the layer when a batch does not fit.

``calib`` is one batch or an iterable of batches (a list, a DataLoader); each batch is any
input item of :mod:`sparsekern.inputs`: a tensor (``model(x)``), a Mapping such as a
tokenizer's output (``model(**item)``), ``sparsekern.Args(*args, **kwargs)``, or an
(inputs, targets) tuple/list (``model(inputs)``).
"""
from __future__ import annotations

import collections.abc
import contextlib
from typing import Callable, List, Optional

import torch
from torch import nn

from .. import inputs


class StopForward(Exception):
    """Raised by a hook to end a calibration forward early (the rest is not needed)."""


def batches(calib, what: str = "calib") -> list:
    """The calibration items as a list (each checked; raises on anything else)."""
    return inputs.items(calib, what)


def replayable(calib):
    """``calib`` such that every pass over it reads the same batches: a one-shot iterator (a
    generator, ``iter(list)``, a streaming pipe) is read into a list once, here; anything
    else (None, one batch, a list, a DataLoader) is returned as it is. Entry points that read
    ``calib`` more than once (sequential Wanda/SparseGPT, sensitivity scans, schedules,
    channel pruning) call this first."""
    return list(calib) if isinstance(calib, collections.abc.Iterator) else calib


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
        call: Optional[Callable[..., object]] = None) -> None:
    """Run ``model`` (or ``call(*args, **kwargs)``) on every calibration item without
    gradients, in eval mode; every module's own train/eval flag is restored afterwards.

    A batch that does not fit raises ValueError naming the batch, its shape and the layer
    that rejected it, or its dtype and the model's when they differ; an empty batch (0 rows)
    raises ValueError naming the batch and its shape. A hook may raise :class:`StopForward`
    to end one item's forward early.
    """
    xs = batches(calib, what)
    call = model if call is None else call
    with inputs.eval_mode(model), inputs.no_kv_cache(model), torch.no_grad():
        for i, x in enumerate(xs):
            args, kwargs = inputs.split(x, f"{what} batch {i}")
            with _current_layer_tracker(model) as stack, \
                    inputs.token_mask(inputs.token_mask_of(x, model)):
                try:
                    call(*args, **kwargs)
                except StopForward:
                    pass
                except (RuntimeError, ValueError, IndexError, TypeError) as e:
                    err = misfit(model, x, f"{what} batch {i}", stack, e)
                    raise ValueError(f"{err}{pair_hint(calib, i, what)}") from e


def pair_hint(calib, failed: int, what: str = "calib") -> str:
    """A hint for a tuple/list of tensors that was read as that many batches but may be one
    (inputs, targets) batch (``next(iter(loader))``): batch ``failed`` (> 0) was rejected and
    differs from batch 0 in dims or dtype, as targets do; "" for anything else."""
    if not (isinstance(calib, (tuple, list)) and len(calib) >= 2 and 0 < failed < len(calib)
            and all(isinstance(t, torch.Tensor) for t in calib)):
        return ""
    first, bad = calib[0], calib[failed]
    if bad.dim() == first.dim() and bad.dtype == first.dtype:
        return ""
    shapes = ", ".join(f"{list(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in calib)
    return (f"; {what} is a {type(calib).__name__} of {len(calib)} tensors ({shapes}), read as "
            f"{len(calib)} batches: if it is one (inputs, targets) batch (a DataLoader's), "
            f"pass [batch] or the inputs alone")


def param_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the model's first floating-point parameter (or buffer); None if none."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def dtype_mismatch(model: nn.Module, item, what: str, e: Exception) -> Optional[ValueError]:
    """ValueError naming ``what`` (e.g. "calib batch 0"), the dtype of its first floating-point
    input tensor and the model's parameter dtype when they differ, else None. Called after
    the model rejected ``item`` with ``e`` (a float64 batch to a float32 model)."""
    want = param_dtype(model)
    got = next((t.dtype for t in inputs.input_tensors(item)
                if t.is_floating_point() and t.dtype != want), None)
    if want is None or got is None:
        return None
    return ValueError(f"{what} has dtype {got} (shape {inputs.describe(item)}), but the model's "
                      f"parameters are {want}; expected {want} inputs: convert the batch with "
                      f".to({want}) or the model with .to({got}) (torch: {e})")


def misfit(model: nn.Module, item, what: str, stack: List[str], e: Exception) -> ValueError:
    """The error for an item the model rejected with ``e``: its dtype when that differs from
    the model's, else its shape and the layer that rejected it (the last name on ``stack``,
    see :func:`_current_layer_tracker`)."""
    wrong_dtype = dtype_mismatch(model, item, what, e)
    if wrong_dtype is not None:
        return wrong_dtype
    layer = stack[-1] if stack else None
    where = (f"layer {layer!r} ({type(model.get_submodule(layer)).__name__})"
             if layer else f"the model {type(model).__name__}")
    return ValueError(f"{what} has shape {inputs.describe(item)}, which does not fit {where}: "
                      f"{e}")
