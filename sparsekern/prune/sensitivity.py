"""Sensitivity analysis: prune one layer at a time over a sweep of ratios; ratios from curves."""
from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from . import calibration
from .metric import evaluate
from .granularity import Channel, parse
from .layers import check_ratio
from .pruner import calib_checked, prune_model, pruned_layers

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: A drop larger than this fraction of the baseline at <= 60% sparsity looks wrong.
SUSPICIOUS_EARLY_DROP = 0.5


@dataclass
class SensitivityTable:
    """The sweep: ``curves[layer][i]`` is the metric with only that layer pruned to ``ratios[i]``.

    ``baseline`` is the metric of the unpruned model; ``higher_is_better`` says which way
    the metric goes (accuracy: True, loss: False).
    """

    ratios: List[float]
    baseline: float
    curves: Dict[str, List[float]]
    higher_is_better: bool = True
    granularity: str = "fine"
    criterion: str = "l1"
    #: {layer: why it was not swept}: the layers channel_prune would leave alone (channel
    #: granularity, default layers only).
    skipped: Dict[str, str] = field(default_factory=dict)

    def drops(self) -> Dict[str, List[float]]:
        """{layer: [metric loss vs baseline at each ratio]} (positive = worse); a NaN metric
        or baseline is a broken model: an infinite loss, never "no drop"."""
        sign = 1.0 if self.higher_is_better else -1.0
        return {n: [math.inf if math.isnan(self.baseline - v) else sign * (self.baseline - v)
                    for v in c] for n, c in self.curves.items()}

    def to_markdown(self) -> str:
        head = "| layer | " + " | ".join(f"{r:.0%}" for r in self.ratios) + " |"
        sep = "|---|" + "---|" * len(self.ratios)
        rows = [f"| {n} | " + " | ".join(f"{v:.4g}" for v in c) + " |"
                for n, c in self.curves.items()]
        return "\n".join([f"baseline: {self.baseline:.4g}", head, sep] + rows)

    def save_png(self, path: Union[str, os.PathLike]) -> None:
        """One line per layer: metric vs ratio, with the baseline dashed (Agg backend)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for name, curve in self.curves.items():
            ax.plot([100 * r for r in self.ratios], curve, marker="o", label=name)
        ax.axhline(self.baseline, color="gray", linestyle="--", label="dense")
        ax.set_xlabel("sparsity of the layer (%)")
        ax.set_ylabel("metric")
        ax.set_title(f"sensitivity ({self.granularity}, {self.criterion})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png")


def check_curves(table: SensitivityTable, early_drop: float = SUSPICIOUS_EARLY_DROP) -> List[str]:
    """Messages for curves that look wrong for a correct pruner (see sensitivity_scan)."""
    problems = []
    scale = abs(table.baseline) if table.baseline else 1.0
    for name, drops in table.drops().items():
        early = [(r, d) for r, d in zip(table.ratios, drops) if r <= 0.6 + 1e-9]
        bad = [(r, d) for r, d in early if d > early_drop * scale]
        if bad:
            r, d = bad[0]
            problems.append(
                f"layer {name!r}: the metric already drops by {d:.4g} (baseline "
                f"{table.baseline:.4g}) at {r:.0%} sparsity; a correct pruner rarely hurts this "
                f"much this early: check that it removes the least important weights and that "
                f"eval_fn evaluates the model it was given")
        late = [d for r, d in zip(table.ratios, drops) if r >= 0.9 - 1e-9]
        if late and all(abs(d) <= 1e-12 * max(1.0, scale) for d in late):
            problems.append(
                f"layer {name!r}: no change at all at >= 90% sparsity; check that the pruned "
                f"weights are really used by the model eval_fn evaluates")
    return problems


def sensitivity_scan(model: nn.Module, eval_fn: Callable[[nn.Module], float],
                     ratios: Sequence[float] = DEFAULT_RATIOS, granularity="fine",
                     criterion: str = "l1", calib=None, layers=None,
                     png: Optional[Union[str, os.PathLike]] = None, higher_is_better: bool = True,
                     example_input: Optional[torch.Tensor] = None, progress: bool = True,
                     warn: bool = True) -> SensitivityTable:
    """Prune each layer alone at every ratio and evaluate; the model is restored afterwards.

    Args:
        model: the trained model (left unchanged).
        eval_fn: ``eval_fn(model) -> float``, e.g. validation accuracy.
        ratios: the sweep (each in [0, 1)).
        granularity, criterion, calib, layers: as for prune_model; "channel" prunes a copy
            of the model per point (example_input or calib traces it). Without ``layers``
            the layers swept are those prune_model prunes at that granularity (every
            nn.Conv2d for "kernel"; for "channel" those channel_prune prunes, the others
            listed in the table's ``skipped``); a named layer that does not fit raises.
        png: where to save the plot (one line per layer), or None.
        higher_is_better: False for a loss.
        warn: warn about curves that look wrong for a correct pruner — a drop of more than
            half the baseline at <= 60% sparsity, or no change at all at >= 90%.
    """
    if not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable as eval_fn(model) -> float, got "
                        f"{type(eval_fn).__name__}")
    if isinstance(ratios, (int, float, torch.Tensor)) or not hasattr(ratios, "__iter__"):
        raise TypeError(f"ratios must be a sequence of sparsities to sweep, e.g. [0.3, 0.5, "
                        f"0.7], got {ratios!r} ({type(ratios).__name__}); for one ratio give "
                        f"[{ratios!r}]")
    ratios = [check_ratio(r) for r in ratios]
    calib = calibration.replayable(calib)
    if not ratios:
        raise ValueError("ratios is empty; give the sparsities to sweep, e.g. [0.3, 0.5, 0.7]")
    g = parse(granularity)
    calib = calib_checked(g, criterion, calib, example_input)  # warned once, not per point
    if g.fixed_ratio is not None:
        raise ValueError(f"sensitivity_scan sweeps ratios; granularity '{g}' fixes its ratio")
    channel = isinstance(g, Channel)
    skipped: Dict[str, str] = {}
    if channel:  # the layers channel_prune would prune, found as it finds them
        from . import criteria
        from .channel import REACHES_OUTPUT, _example_input, select_channel_layers
        criteria.check_criterion(criterion, channel=True)
        traced, traced_with = _example_input(example_input, calib)
        _, groups, skipped = select_channel_layers(model, traced, criterion, layers,
                                                   traced_with)
        names = list(groups)
        unexpected = {n: why for n, why in skipped.items() if why != REACHES_OUTPUT}
        if warn and unexpected:
            warnings.warn("sensitivity_scan: channel pruning leaves these layers alone (not "
                          "swept): " + "; ".join(f"{n}: {why}" for n, why in unexpected.items()),
                          stacklevel=2)
    else:
        names = list(pruned_layers(model, layers, g))
    baseline = evaluate(eval_fn, model)
    if math.isnan(baseline):
        raise ValueError("eval_fn returned NaN for the unpruned model: no drop can be measured "
                         "against it; check the metric")
    curves: Dict[str, List[float]] = {}
    from tqdm.auto import tqdm
    bar = tqdm(total=len(names) * len(ratios), desc="sensitivity", disable=not progress)
    for name in names:
        curve = []
        module = model.get_submodule(name)
        saved = module.weight.detach().clone()
        for r in ratios:
            if channel:
                from .channel import channel_prune
                trial = copy.deepcopy(model)
                channel_prune(trial, {name: r}, example_input=example_input,
                              criterion=criterion, calib=calib, warn=False)
                curve.append(evaluate(eval_fn, trial))
            else:
                try:
                    prune_model(model, r, g, criterion, calib=calib, layers=[name])
                    curve.append(evaluate(eval_fn, model))
                finally:
                    with torch.no_grad():
                        module.weight.copy_(saved)
            bar.update(1)
        curves[name] = curve
    bar.close()
    table = SensitivityTable(ratios, baseline, curves, higher_is_better, str(g), criterion,
                             skipped)
    if warn:
        for msg in check_curves(table):
            warnings.warn(msg, stacklevel=2)
    if png is not None:
        table.save_png(png)
    return table


def ratios_from_sensitivity(table: SensitivityTable, max_drop: float) -> Dict[str, float]:
    """Per layer, the largest swept ratio whose drop (and every smaller ratio's) is <= max_drop.

    ``max_drop`` is in the metric's units (0.01 = one accuracy point for accuracy in [0, 1]).
    A layer that already exceeds it at the smallest ratio gets 0.0 (left dense).
    """
    if not isinstance(max_drop, (int, float)) or isinstance(max_drop, bool) or \
            math.isnan(max_drop) or max_drop < 0:
        raise ValueError(f"max_drop must be a non-negative number (in the metric's units), got "
                         f"{max_drop!r}")
    if not isinstance(table, SensitivityTable):
        raise TypeError(f"table must be a SensitivityTable from sensitivity_scan, got "
                        f"{type(table).__name__}")
    order = sorted(range(len(table.ratios)), key=lambda i: table.ratios[i])
    out = {}
    for name, drops in table.drops().items():
        best = 0.0
        for i in order:
            if drops[i] > max_drop:
                break
            best = table.ratios[i]
        out[name] = best
    return out
