"""The demo's settings, as one dataclass (every field documented)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Union

from ..auto.choose import DEFAULT_MARGIN
from ..auto.measure import MeasureSettings
from ..timing import TimerSettings
from ..prune import DEFAULT_FINETUNE_LR

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
        target_speedup: the search's target over the dense model: one number, or one per
            example input (a list in their order, or {shape label: value}).
        strategy: "netadapt" (sparsekern.auto.netadapt) or "amc" (sparsekern.auto.amc, a
            learned per-layer ratio policy, ``amc_episodes`` episodes, in the first
            granularity of ``granularities`` that has a free ratio).
        granularities: what the search may use per layer ("fine", "2:4", (bm, bk), ...).
        criterion: the pruning step's criterion ("l1", "wanda", "sparsegpt", ...; the
            last two use ``calib``).
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
        if self.strategy not in ("netadapt", "amc"):
            raise ValueError(f"strategy must be 'netadapt' or 'amc', got {self.strategy!r}")
        for name in ("short_steps", "final_steps", "final_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if not isinstance(self.windows, int) or self.windows < 1:
            raise ValueError(f"windows must be an int >= 1, got {self.windows!r}")
        if not 0 < self.max_ratio < 1:
            raise ValueError(f"max_ratio must be in (0, 1), got {self.max_ratio!r}")
        if not 0.0 <= self.relax_target <= 1.0:
            raise ValueError(f"relax_target must be in [0, 1], got {self.relax_target!r}")
        if self.distill_loss not in ("mse", "cosine"):
            raise ValueError(f"distill_loss must be 'mse' or 'cosine', got {self.distill_loss!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        d = self.max_search_drop
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < float("inf"):
            raise ValueError(f"max_search_drop must be a finite number >= 0 (the search's "
                             f"metric floor is the dense metric minus it), got {d!r}")

    def summary(self) -> dict:
        """The JSON-ready settings written to report.json."""
        keep = ("strategy", "criterion", "final_criterion", "short_steps", "netadapt_steps", "max_iterations",
                "max_search_drop", "margin", "amc_episodes", "max_ratio", "relax_target", "final_steps",
                "final_epochs", "lr", "distill_loss", "seed", "windows")
        out = {k: getattr(self, k) for k in keep}
        out["granularities"] = [str(g) for g in self.granularities]
        return out
