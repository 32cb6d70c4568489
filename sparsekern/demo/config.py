"""The demo's settings, as one dataclass (every field documented)."""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from ..auto.choose import DEFAULT_MARGIN
from ..auto.measure import MeasureSettings
from ..auto.patterns import planned_densities
from ..auto.table import LatencyTable
from ..timing import TimerSettings
from ..prune import DEFAULT_FINETUNE_LR, parse_granularity
from ..prune.criteria import WEIGHT_CRITERIA, check_criterion
from ..prune.granularity import NM
from ..prune.layers import check_ratio

#: What the default demo must show on a 2-core CPU (the issue's targets).
REQUIRED_SPEEDUP = (2.0, 1.5)       # at the first and second example input
#: The search aims above the requirement, so that the measured speedup clears it even when
#: the table's prediction is off by its tolerance.
SEARCH_SPEEDUP = (3.0, 2.0)
MAX_ACCURACY_DROP = 0.01            # 1 point
MAX_PREDICTION_ERROR = 0.15
#: A sparse model counts as "slower than dense" only beyond this timing-noise allowance.
SLOWER_TOLERANCE = 0.03

#: Timer of the final per-layer measurements and of each end-to-end window.
REPORT_TIMER = TimerSettings(min_time=0.1, min_reps=10, max_reps=400, max_candidate_time=0.5)
#: The end-to-end measurement is repeated in this many windows (sparsekern.auto.verify).
REPORT_WINDOWS = 5

SENSITIVITY_RATIOS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)

Speedups = Union[float, Sequence[float], Dict[str, float]]


@dataclass
class DemoConfig:
    """How :func:`sparsekern.demo.run` prunes, recovers, converts and measures a model.

    Search:
        target_speedup: the search's target over the dense model (each > 0): one number,
            or one per example input (a list in their order, or a dict keyed by each
            input's shape label, e.g. "[1, 32]", or by its name in ``labels``).
        strategy: "netadapt" (sparsekern.auto.netadapt) or "amc" (sparsekern.auto.amc, a
            learned per-layer ratio policy, ``amc_episodes`` >= 1 episodes, in the first
            granularity of ``granularities`` that has a free ratio).
        granularities: what the search may use per layer: "fine", "N:M" ("2:4"), blocks
            ((bm, bk) or "16x16"); not "kernel" or "channel".
        criterion: the pruning step's criterion, a weight-level one: "l1", "l2", "wanda"
            or "sparsegpt" (the last two use ``calib``).
        final_criterion: after the search, the chosen layers are pruned again from the
            dense weights at the plan's granularities and ratios with this criterion
            (e.g. "sparsegpt", too slow to run per candidate); the masks with the better
            metric are kept. None: the search's masks.
        layers: the layers the search may prune (None: every layer of the latency table).
        short_steps: recovery steps of each search candidate (0: none).
        netadapt_steps: NetAdapt's first iteration asks for 1/netadapt_steps of the way to
            the budget (fewer: bigger, fewer iterations).
        max_iterations, max_search_drop: the search stops after max_iterations; a candidate
            (NetAdapt) or an episode (AMC) whose metric, before recovery, is more than
            max_search_drop below the dense model's is rejected: the quality floor. AMC
            returns the best plan above the floor that meets the latency target, else the
            fastest plan above the floor, else none (sparsekern.auto.amc).
        margin: a format is used only when predicted this much faster than dense.
        max_ratio: the highest pruning ratio the search may give a layer.
        relax_target: before searching, the table predicts the speedup with every
            searchable layer at max_ratio (sparsekern.demo.reach); when that misses the
            target, the search aims at this fraction of the reachable gain instead; 0: off
            (the search runs to the target and may find nothing: the model stays dense).
            The checks keep ``required_speedup`` either way.
    Recovery:
        final_steps: steps of the final recovery (fine-tune with labels, or distillation
            from the dense model without them); masks are held.
        lr: its learning rate (smaller than pre-training).
        distill_loss: the distillation loss on the model's outputs, "mse" or "cosine"
            (unlabelled data only).
    Checks:
        required_speedup (default: target_speedup), max_accuracy_drop (labelled data),
        min_cosine / min_top1 (unlabelled data: outputs against the dense model's),
        max_prediction_error.
    Measurement:
        sensitivity_ratios, sensitivity_layers (None: the search's layers): the scan.
        settings, cache, table: latency-table grid/timer, disk cache (None: default folder,
            False: none), or a table to use instead of measuring one.
        timer, windows: the final measurements (sparsekern.auto.verify.paired_prediction).
        layer_latency: also time every layer dense vs sparse on its real input (the
            per-layer columns and layer_latency.png).
        labels: display names of the example inputs (e.g. "1 sentence"), default their shapes.
    Output:
        out_dir, extra (more report fields), print_fn, seed.

    Every field is checked on construction and again by :func:`~sparsekern.demo.run`
    (:meth:`check`): a bad value is a ValueError (TypeError for a callable or settings
    object) that names the field, what it got and what was expected.
    Hooks (None: the task's defaults, see :mod:`sparsekern.demo.tasks`):
        eval_fn(model) -> float, finetune_fn(model), final_finetune_fn(model).
    """

    target_speedup: Speedups = SEARCH_SPEEDUP[0]
    strategy: str = "netadapt"
    granularities: Sequence[Any] = ("fine", "2:4")
    criterion: str = "l1"
    final_criterion: Optional[str] = None
    layers: Optional[Sequence[str]] = None
    short_steps: int = 20
    netadapt_steps: int = 5
    max_iterations: int = 20
    max_search_drop: float = 0.03
    margin: float = DEFAULT_MARGIN
    amc_episodes: int = 60
    max_ratio: float = 0.95
    relax_target: float = 0.0
    final_steps: int = 0            # 0: final_epochs passes over the training data
    final_epochs: int = 3
    lr: float = DEFAULT_FINETUNE_LR
    distill_loss: str = "mse"
    required_speedup: Optional[Speedups] = None
    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_cosine: float = 0.97
    min_top1: float = 0.90
    max_prediction_error: float = MAX_PREDICTION_ERROR
    sensitivity_ratios: Sequence[float] = SENSITIVITY_RATIOS
    sensitivity_layers: Optional[Sequence[str]] = None
    settings: Optional[MeasureSettings] = None
    cache: Any = None
    table: Any = None
    timer: TimerSettings = field(default_factory=lambda: REPORT_TIMER)
    windows: int = REPORT_WINDOWS
    layer_latency: bool = True
    labels: Optional[Sequence[str]] = None
    out_dir: str = "sparsekern-demo"
    extra: Optional[dict] = None
    print_fn: Callable[[str], None] = print
    seed: int = 0
    eval_fn: Optional[Callable] = None
    finetune_fn: Optional[Callable] = None
    final_finetune_fn: Optional[Callable] = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError (TypeError for a field that must be a callable or a settings
        object) naming the first bad field, what it got and what was expected. Run on
        construction and again by :func:`sparsekern.demo.run` (fields may be set later)."""
        self._check_search()
        self._check_recovery()
        self._check_checks()
        self._check_measurement()
        self._check_output()

    def _check_search(self) -> None:
        if self.strategy not in ("netadapt", "amc"):
            raise ValueError(f"strategy must be 'netadapt' or 'amc', got {self.strategy!r}")
        check_speedups("target_speedup", self.target_speedup)
        check_granularities(self.granularities)
        problem = amc_granularity_problem(self.strategy, self.granularities)
        if problem:
            raise ValueError(f"granularities: {problem}")
        check_weight_criterion("criterion", self.criterion)
        if self.final_criterion is not None:
            check_weight_criterion("final_criterion", self.final_criterion)
        _check_names("layers", self.layers)
        _check_ints(self, ("short_steps",), 0)
        _check_ints(self, ("netadapt_steps", "max_iterations", "amc_episodes"), 1)
        d = self.max_search_drop
        if not _finite(d) or d < 0:
            raise ValueError(f"max_search_drop must be a finite number >= 0 (the search's "
                             f"metric floor is the dense metric minus it), got {d!r}")
        _check_number("margin", self.margin, lambda v: 0 <= v < 1, "in [0, 1)")
        _check_number("max_ratio", self.max_ratio, lambda v: 0 < v < 1, "in (0, 1)")
        _check_number("relax_target", self.relax_target, lambda v: 0 <= v <= 1, "in [0, 1]")

    def _check_recovery(self) -> None:
        _check_ints(self, ("final_steps", "final_epochs"), 0)
        _check_number("lr", self.lr, lambda v: v > 0, "> 0")
        if self.distill_loss not in ("mse", "cosine"):
            raise ValueError(f"distill_loss must be 'mse' or 'cosine', got {self.distill_loss!r}")
        for name in ("eval_fn", "finetune_fn", "final_finetune_fn"):
            f = getattr(self, name)
            if f is not None and not callable(f):
                raise TypeError(f"{name} must be None or a callable taking the model, got "
                                f"{type(f).__name__} {f!r}")

    def _check_checks(self) -> None:
        if self.required_speedup is not None:
            check_speedups("required_speedup", self.required_speedup)
        _check_number("max_accuracy_drop", self.max_accuracy_drop, lambda v: 0 <= v <= 1,
                      "in [0, 1] (a fraction: 0.01 is one point)")
        _check_number("min_cosine", self.min_cosine, lambda v: -1 <= v <= 1, "in [-1, 1]")
        _check_number("min_top1", self.min_top1, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check_number("max_prediction_error", self.max_prediction_error, lambda v: v >= 0,
                      ">= 0 (a fraction: 0.15 is 15%)")

    def _check_measurement(self) -> None:
        check_sensitivity_ratios(self.sensitivity_ratios)
        _check_names("sensitivity_layers", self.sensitivity_layers)
        _check_instance("settings", self.settings, MeasureSettings, optional=True)
        _check_instance("table", self.table, LatencyTable, optional=True)
        _check_instance("timer", self.timer, TimerSettings)
        _check_ints(self, ("windows",), 1)
        _check_names("labels", self.labels)

    def _check_output(self) -> None:
        if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
            raise ValueError(f"out_dir must be a folder path (a non-empty str or os.PathLike), "
                             f"got {self.out_dir!r}")
        if self.extra is not None and not isinstance(self.extra, dict):
            raise ValueError(f"extra must be None or a dict of report fields, got "
                             f"{type(self.extra).__name__}")
        if not callable(self.print_fn):
            raise TypeError(f"print_fn must be a callable taking one line (str), got "
                            f"{type(self.print_fn).__name__} {self.print_fn!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    def summary(self) -> dict:
        """The JSON-ready settings written to report.json."""
        keep = ("strategy", "criterion", "final_criterion", "short_steps", "netadapt_steps", "max_iterations",
                "max_search_drop", "margin", "amc_episodes", "max_ratio", "relax_target", "final_steps",
                "final_epochs", "lr", "distill_loss", "seed", "windows")
        out = {k: getattr(self, k) for k in keep}
        out["granularities"] = [str(g) for g in self.granularities]
        return out


#: The granularities the latency-aware search can price (sparsekern.auto.patterns).
SEARCH_GRANULARITIES = ("'fine', 'N:M' (e.g. '2:4', N < M), or blocks (bm, bk) / 'BMxBK' "
                        "(e.g. (16, 16), '16x16')")


def _finite(v) -> bool:
    """A real number (not a bool, not a str), finite."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_number(name: str, v, ok: Callable[[float], bool], expected: str) -> None:
    if not _finite(v) or not ok(float(v)):
        raise ValueError(f"{name} must be {expected}, got {v!r}")


def _check_ints(cfg, names: Sequence[str], low: int) -> None:
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")


def _check_instance(name: str, v, cls, optional: bool = False) -> None:
    if (v is None and optional) or isinstance(v, cls):
        return
    raise TypeError(f"{name} must be {'None or ' if optional else ''}a {cls.__name__}, got "
                    f"{type(v).__name__}")


def _check_names(name: str, v) -> None:
    """None, or a non-empty sequence of str (layer names, shape labels)."""
    if v is None:
        return
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v or \
            not all(isinstance(n, str) for n in v):
        raise ValueError(f"{name} must be None or a non-empty list of names (str), got {v!r}")


def check_speedups(name: str, v) -> None:
    """``v`` is a speedup: a finite number > 0, a non-empty list of them (one per example
    input) or a non-empty {shape label (str): number}; ValueError naming ``name``."""
    if isinstance(v, Mapping):
        entries = [(f"{name}[{k!r}]", x) for k, x in v.items()]
        if not entries or not all(isinstance(k, str) for k in v):
            raise ValueError(f"{name} must be a number, a list or a non-empty dict keyed by "
                             f"shape label (str), got {v!r}")
    elif isinstance(v, (list, tuple)):
        entries = [(f"{name}[{i}]", x) for i, x in enumerate(v)]
        if not entries:
            raise ValueError(f"{name} is empty; expected a number or one per example input")
    else:
        entries = [(name, v)]
    for what, x in entries:
        _check_number(what, x, lambda f: f > 0, "a finite number > 0 (a speedup over dense)")


def check_weight_criterion(name: str, criterion) -> str:
    """``criterion`` is one of the weight-level criteria the search prunes with
    (sparsekern.prune's WEIGHT_CRITERIA and check_criterion); ValueError naming ``name``."""
    if criterion not in WEIGHT_CRITERIA:
        raise ValueError(f"{name} must be one of {list(WEIGHT_CRITERIA)} (a weight pruning "
                         f"criterion), got {criterion!r}")
    return check_criterion(criterion, channel=False)


def check_granularity(g, what: str = "granularity"):
    """The parsed granularity (sparsekern.prune's spelling) when the search can price it
    (fine, N:M, blocks); ValueError naming ``what`` otherwise."""
    try:
        parsed = parse_granularity(g)
        planned_densities(parsed, 0.5, [])  # the search's own test (kernel, channel: no)
    except ValueError:
        raise ValueError(f"{what} must be a granularity the search can use: "
                         f"{SEARCH_GRANULARITIES}; got {g!r}") from None
    return parsed


def amc_granularity_problem(strategy: str, gs) -> Optional[str]:
    """Why ``gs`` cannot serve the search ``strategy``, or None: AMC searches a free ratio per
    layer, which an N:M pattern (its ratio fixed at 1 - N/M) does not have, so AMC needs at
    least one free granularity ("fine" or blocks); N:M alone is NetAdapt's to search."""
    if strategy != "amc" or not gs or any(not isinstance(parse_granularity(g), NM) for g in gs):
        return None
    return (f"got only N:M patterns {[str(g) for g in gs]}, but the amc search prunes each "
            f"layer to a ratio it chooses, which an N:M pattern fixes; add 'fine' or a block "
            f"size such as '16x16', or search the N:M patterns with strategy 'netadapt'")


def check_granularities(gs) -> None:
    if isinstance(gs, str) or not isinstance(gs, (list, tuple)) or not gs:
        raise ValueError(f"granularities must be a non-empty list, e.g. ('fine', '2:4'), got "
                         f"{gs!r}")
    for i, g in enumerate(gs):
        check_granularity(g, f"granularities[{i}]")


def check_sensitivity_ratios(ratios) -> None:
    """A non-empty list of ratios in [0, 1) (sparsekern.prune's check_ratio)."""
    if isinstance(ratios, str) or not isinstance(ratios, (list, tuple)) or not ratios:
        raise ValueError(f"sensitivity_ratios must be a non-empty list of ratios in [0, 1), "
                         f"e.g. (0.5, 0.9), got {ratios!r}")
    for i, r in enumerate(ratios):
        try:
            check_ratio(r)
        except (TypeError, ValueError):
            raise ValueError(f"sensitivity_ratios[{i}] must be a ratio in [0, 1) (the "
                             f"fraction of weights removed), got {r!r}") from None
