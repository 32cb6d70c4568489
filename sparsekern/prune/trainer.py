"""A minimal trainer: fine-tune with the masks held, and measure accuracy.

For your own loop use :class:`sparsekern.prune.MaskHolder` instead (see masks.py).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, List, Mapping, Optional

import torch
from torch import nn

from .. import inputs
from .layers import default_layers
from .masks import MaskHolder, StoredZeroHolder, masks_from_zeros

#: Fine-tuning after pruning uses a lower learning rate than training (Adam).
DEFAULT_FINETUNE_LR = 3e-4
#: Learning rate of :func:`train` (training from scratch, Adam).
DEFAULT_TRAIN_LR = 1e-3


def _targets(y, what: str):
    """Targets as a tensor: a list or tuple of numbers (a hand-built batch) is converted;
    anything else that is not a tensor is a ValueError naming ``what``."""
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (list, tuple)):
        try:
            return torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{what} is a {type(y).__name__} that is not a tensor of numbers "
                             f"({e}); expected a tensor of class indices") from None
    raise ValueError(f"{what} is a {type(y).__name__}; expected a tensor of class indices (or "
                     f"a list of numbers)")


def _split(batch):
    """(inputs, targets) of a batch: an (inputs, targets) pair, or a Hugging Face style
    Mapping whose "labels" are the targets and whose other entries are the model's
    arguments. Targets given as a list of numbers become a tensor."""
    if isinstance(batch, Mapping) and "labels" in batch:
        return ({k: v for k, v in batch.items() if k != "labels"},
                _targets(batch["labels"], "the batch's 'labels'"))
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        extra = (f" without a 'labels' key (keys {list(batch)[:5]})"
                 if isinstance(batch, Mapping) else "")
        raise ValueError(f"each batch of the loader must be an (inputs, targets) pair or a "
                         f"Mapping of the model's arguments with the targets under 'labels', "
                         f"got {type(batch).__name__}{extra}")
    y = batch[1]
    return batch[0], (_targets(y, "the batch's targets")
                      if isinstance(y, (list, tuple)) else y)


def _forward(model: nn.Module, x) -> torch.Tensor:
    """The model's output tensor for inputs ``x``: a tensor (``model(x)``), a Mapping such as
    a tokenizer's output (``model(**x)``), ``sparsekern.Args`` or a tuple of positional inputs;
    of a Hugging Face ModelOutput its first tensor (``logits``)."""
    return inputs.output_tensor(inputs.call(model, x, "the batch's inputs", tuple_is="args"),
                                "the model")


def default_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross entropy of ``out`` [batch, classes, ...] against class indices [batch, ...] or
    probabilities of ``out``'s shape; other targets raise ValueError naming both shapes."""
    idx = [out.shape[0]] + list(out.shape[2:]) if out.dim() >= 2 else None
    if isinstance(y, torch.Tensor) and idx is not None and list(y.shape) not in (
            idx, list(out.shape)):
        raise ValueError(f"the model's output has shape {list(out.shape)} and the targets "
                         f"{list(y.shape)}; the default loss, cross entropy, needs targets {idx} "
                         f"(class indices of [batch, classes, ...] outputs) or "
                         f"{list(out.shape)} (class probabilities): pass loss_fn= for other "
                         f"outputs")
    return nn.functional.cross_entropy(out, y)


def _count(y) -> int:
    return int(y.shape[0]) if isinstance(y, torch.Tensor) and y.dim() else len(y)


def train(model: nn.Module, loader, epochs: int = 1, lr: float = DEFAULT_TRAIN_LR,
          masks: Optional[Mapping[str, torch.Tensor]] = None,
          loss_fn: Optional[Callable] = None, optimizer: Optional[torch.optim.Optimizer] = None,
          weight_decay: float = 0.0, progress: bool = True,
          penalty: Optional[Callable[[nn.Module], torch.Tensor]] = None) -> List[float]:
    """Train ``model`` on ``loader`` ((inputs, targets) batches, or Mappings with the targets
    under "labels", as a Hugging Face collator makes) for ``epochs``. Inputs may be
    a tensor, a tokenizer's output (a Mapping: ``model(**inputs)``), ``sparsekern.Args`` or a
    tuple of positional inputs; a Hugging Face model's output counts as its ``logits``.

    Args:
        masks: held through training (pruned weights stay exactly 0); None holds nothing.
        loss_fn: ``loss_fn(output, targets)``; default cross entropy (targets: class indices
            [batch, ...] of a [batch, classes, ...] output, or probabilities of its shape).
        optimizer: default Adam(lr, weight_decay).
        penalty: an extra loss term ``penalty(model)`` (e.g. prune.bn_l1_penalty).
    Returns the mean loss of each epoch.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    # inf or nan would train to nan weights
    if (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr)
            or lr <= 0):
        raise ValueError(f"lr must be positive, got {lr!r}; expected a finite number > 0")
    loss_fn = default_loss if loss_fn is None else loss_fn
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    holder = MaskHolder(model, masks).attach(opt) if masks else None
    from tqdm.auto import tqdm
    losses = []
    flags = inputs.train_flags(model)
    model.train()
    try:
        bar = tqdm(total=epochs * len(loader) if hasattr(loader, "__len__") else None,
                   desc="fine-tune" if holder else "train", disable=not progress, leave=False)
        for epoch in range(epochs):
            total, n = 0.0, 0
            for batch in loader:
                x, y = _split(batch)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(_forward(model, x), y)
                if penalty is not None:
                    loss = loss + penalty(model)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * _count(y)
                n += _count(y)
                bar.update(1)
                bar.set_postfix(loss=f"{total / max(1, n):.4f}")
            if n == 0:  # a mean of nothing would read as a perfect fit (loss 0.0)
                raise ValueError(
                    f"loader ran out after epoch {epoch}: a one-shot iterator (a generator) "
                    f"cannot be read again; give epochs=1, or a list or DataLoader of batches"
                    if epoch else "loader is empty: give at least one (inputs, targets) batch")
            losses.append(total / n)
        bar.close()
    finally:
        if holder is not None:
            holder.apply()
            holder.detach()
        inputs.restore_flags(flags)  # each module's own train/eval flag
    return losses


def fine_tune(model: nn.Module, loader, epochs: int = 1, lr: float = DEFAULT_FINETUNE_LR,
              masks: Optional[Mapping[str, torch.Tensor]] = None, **kwargs) -> List[float]:
    """:func:`train` after pruning: lower default lr, and the pruning held.

    ``masks=None`` holds the zeros currently in every Linear/Conv2d weight and the zeros
    packed layers store (:class:`StoredZeroHolder`), so a pruned model stays pruned; pass
    your masks (packed layers' stored zeros are held too), or ``{}`` to hold nothing.
    """
    if masks is None:
        masks = masks_from_zeros(model) if default_layers(model) else {}
    elif isinstance(masks, Mapping) and not masks:
        return train(model, loader, epochs=epochs, lr=lr, masks=masks, **kwargs)
    stored = StoredZeroHolder(model)
    if not stored.keep:
        return train(model, loader, epochs=epochs, lr=lr, masks=masks, **kwargs)
    with stored:  # every optimizer's steps, train's own included
        return train(model, loader, epochs=epochs, lr=lr, masks=masks, **kwargs)


#: Targets with this value are not counted (Hugging Face's and cross entropy's ignore_index:
#: padding tokens of a token-classification batch).
IGNORE_INDEX = -100


@torch.no_grad()
def accuracy(model: nn.Module, loader) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``loader`` ((inputs, targets) batches, or
    Mappings with the targets under "labels"): the fraction of targets the output's argmax
    over its last dimension matches, per sample ([batch] targets) or per token ([batch,
    tokens] targets, as token classification has), targets of -100 not counted."""
    correct = total = 0
    with inputs.eval_mode(model):  # every module's own train/eval flag comes back
        for batch in loader:
            x, y = _split(batch)
            y = _targets(y, "the batch's targets")
            pred = _forward(model, x).argmax(-1)
            if pred.shape != y.shape:
                raise ValueError(f"accuracy: the model's predictions (argmax over the last "
                                 f"dimension of its output) have shape {list(pred.shape)} and "
                                 f"the targets {list(y.shape)}; expected the same shape "
                                 f"(class indices)")
            counted = y != IGNORE_INDEX
            correct += int(((pred == y.to(pred.device)) & counted.to(pred.device)).sum())
            total += int(counted.sum())
    if total == 0:
        raise ValueError("the loader yielded no samples")
    return correct / total
