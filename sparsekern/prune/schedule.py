"""Iterative pruning: prune a little, fine-tune with the masks held, prune more."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from . import calibration
from .granularity import Channel, parse
from .layers import check_ratio
from .masks import Masks, MaskHolder, sparsity
from .metric import evaluate
from .pruner import calib_checked, prune_model


@dataclass
class IterativeResult:
    """``masks``: the final masks; ``history``: one dict per step (ratio, sparsity, metrics)."""

    masks: Masks
    history: List[Dict[str, float]] = field(default_factory=list)


def check_schedule(schedule: Sequence[float]) -> List[float]:
    try:
        steps = list(schedule)
    except TypeError:
        raise TypeError(f"schedule must be a sequence of ratios, got {schedule!r}") from None
    if not steps:
        raise ValueError("schedule is empty; give increasing ratios, e.g. [0.3, 0.5, 0.7]")
    steps = [check_ratio(r) for r in steps]
    if any(b < a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"schedule must not decrease (pruned weights stay pruned), got {steps}")
    return steps


def iterative_prune(model: nn.Module, schedule: Sequence[float] = (0.3, 0.5, 0.7),
                    train_fn: Optional[Callable[[nn.Module], None]] = None,
                    eval_fn: Optional[Callable[[nn.Module], float]] = None,
                    granularity="fine", criterion: str = "l1", calib=None, layers=None,
                    scope: str = "layer", progress: bool = True) -> IterativeResult:
    """Prune to each ratio of ``schedule`` in turn, fine-tuning after each step.

    Args:
        schedule: increasing ratios, e.g. (0.3, 0.5, 0.7).
        train_fn: ``train_fn(model)``, your fine-tuning loop (or a lambda around
            prune.fine_tune). While it runs, the masks are held: every optimizer step
            re-applies them and pruned weights get zero gradients.
        eval_fn: ``eval_fn(model) -> float`` recorded after pruning and after fine-tuning.
        granularity, criterion, calib, layers, scope: as for prune_model (weight-level
            granularities that take a ratio: fine, blocks, kernel).
    """
    steps = check_schedule(schedule)
    calib = calibration.replayable(calib)
    g = parse(granularity)
    calib = calib_checked(g, criterion, calib)  # warned once, not per step
    if isinstance(g, Channel) or g.fixed_ratio is not None:
        raise ValueError(f"iterative_prune needs a granularity that takes a ratio (fine, "
                         f"blocks, kernel); got '{g}'")
    from tqdm.auto import tqdm
    masks: Optional[Masks] = None
    history = []
    for ratio in tqdm(steps, desc="iterative pruning", disable=not progress):
        masks = prune_model(model, ratio, g, criterion, calib=calib, layers=layers, scope=scope,
                            masks=masks)
        entry = {"ratio": ratio, "sparsity": sparsity(model, list(masks))["total"]}
        if eval_fn is not None:
            entry["after_prune"] = evaluate(eval_fn, model)
        if train_fn is not None:
            with MaskHolder(model, masks):
                train_fn(model)
        if eval_fn is not None:
            entry["after_finetune"] = evaluate(eval_fn, model)
        history.append(entry)
    return IterativeResult(masks, history)
