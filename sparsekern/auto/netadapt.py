"""NetAdapt: prune a model, one layer per iteration, until its predicted latency meets a budget.

Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile Applications"
(ECCV 2018), with the latency table of sparsekern.auto as the platform model:

    budget = measured dense latency / target speedup   (at every shape of the table)
    while the predicted latency misses the budget at some shape:
        step = the latency cut asked of this iteration (shrinks a little each time)
        for each layer (and each granularity the user allows):
            the smallest pruning ratio whose predicted model latency drops by >= step
            (the layer's format is what sparsekern.auto.choose would pick for it: the
            fastest format for its pattern, or dense when none is faster)
            -> a candidate: prune a copy, short fine-tune (masks held), evaluate
        keep the candidate with the best metric (ties: the lower latency)
    long fine-tune of the winner

Latency is normalized per shape (predicted / budget) and averaged over the shapes, so one
search can serve batch 1 and batch 64 at once. A layer keeps the granularity of its first
pruning step (later steps prune it further in the same granularity; after an N:M step,
with fine pruning on top, which keeps the 2:4 format possible).
"""
from __future__ import annotations

import copy
import logging
import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..formats import layouts as layout_registry
from ..prune.granularity import NM, Fine, parse
from ..prune.layers import weight_matrix
from ..prune.masks import MaskHolder
from ..prune.metric import evaluate
from ..prune.pruner import calib_read, prune_model
from .choose import DEFAULT_MARGIN, LayerDecision, decide, decide_weight
from .formats import DENSE, parse_format
from .patterns import planned_densities
from .signature import tied_layers
from .table import LatencyTable

log = logging.getLogger("sparsekern")

Targets = Union[float, Sequence[float], Mapping[str, float]]

#: The smallest cut of the normalized latency an iteration asks for before giving up.
MIN_ASK = 1e-3


def _number(v, what: str) -> float:
    """float(v) for a real number (not a bool, not a str: float("2") read a string as 2)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{what} must be a positive number (or one per shape), got "
                        f"{type(v).__name__} {v!r}")
    return float(v)


def _per_shape(value: Targets, shapes: Sequence[str], what: str) -> Dict[str, float]:
    if isinstance(value, Mapping):
        missing = [s for s in shapes if s not in value]
        if missing:
            raise ValueError(f"{what} has no entry for shape(s) {missing}; the table's shapes are "
                             f"{list(shapes)}")
        out = {s: _number(value[s], f"{what}[{s!r}]") for s in shapes}
    elif isinstance(value, (list, tuple)):
        if len(value) != len(shapes):
            raise ValueError(f"{what} has {len(value)} values for {len(shapes)} shapes "
                             f"{list(shapes)}; give one per shape (or one number)")
        out = {s: _number(v, what) for s, v in zip(shapes, value)}
    else:
        out = {s: _number(value, what) for s in shapes}
    for s, v in out.items():
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{what} at {s} must be a positive number, got {v!r}")
    return out


def budgets(table: LatencyTable, target_speedup: Optional[Targets] = None,
            target_latency_s: Optional[Targets] = None) -> Dict[str, float]:
    """{shape: latency budget in seconds} from a target speedup over the dense model or
    from absolute latencies.

    The speedup is taken over the dense model as the table predicts it (not the one
    whole-model timing in ``table.model_s``): the budget and the candidates' latencies then
    come from the same entries, measured the same way, so a moment of machine noise in
    one timing does not move the target.
    """
    if (target_speedup is None) == (target_latency_s is None):
        raise ValueError("give exactly one of target_speedup and target_latency_s")
    if target_latency_s is not None:
        return _per_shape(target_latency_s, table.shapes, "target_latency_s")
    speed = _per_shape(target_speedup, table.shapes, "target_speedup")
    dense_pred = table.predict()
    return {s: dense_pred[s] / speed[s] for s in table.shapes}


@dataclass
class LayerPlan:
    """How a layer is pruned so far: granularity name (None: untouched) and ratio."""

    granularity: Optional[str] = None
    ratio: float = 0.0


@dataclass
class Candidate:
    layer: str
    granularity: str
    ratio: float
    predicted_s: Dict[str, float]
    objective: float
    metric: Optional[float] = None
    format: str = "dense"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class NetAdaptResult:
    """What the search did.

    ``plans``: {layer: LayerPlan}; ``decisions``: {layer: LayerDecision} predicted for
    the final patterns; ``history``: one dict per iteration (candidates, winner);
    ``predicted_s`` / ``budget_s``: {shape: seconds}; ``reached``: the budget is met at
    every shape; ``reason``: why the search stopped; ``metric_*``: eval_fn before,
    after the search, after the final fine-tune; ``left_alone``: {layer: why} of the
    layers the search never pruned (a weight tied to another module's, e.g. GPT-2's
    lm_head: sparsify keeps it dense).
    """

    masks: Dict[str, torch.Tensor]
    plans: Dict[str, LayerPlan]
    decisions: Dict[str, LayerDecision]
    history: List[dict]
    predicted_s: Dict[str, float]
    budget_s: Dict[str, float]
    reached: bool
    reason: str
    metric_dense: Optional[float] = None
    metric_search: Optional[float] = None
    metric_final: Optional[float] = None
    left_alone: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"plans": {n: dict(p.__dict__) for n, p in self.plans.items()},
                "decisions": {n: d.to_dict() for n, d in self.decisions.items()},
                "history": self.history, "predicted_s": self.predicted_s,
                "budget_s": self.budget_s, "reached": self.reached, "reason": self.reason,
                "metric_dense": self.metric_dense, "metric_search": self.metric_search,
                "metric_final": self.metric_final, "left_alone": dict(self.left_alone)}


class _State:
    """Per-layer decisions and the predicted model latency they give."""

    def __init__(self, table: LatencyTable, budget: Dict[str, float], margin: float):
        self.table, self.budget, self.margin = table, budget, margin
        self.specs = [parse_format(f) for f in table.formats()]
        self.formats = [s.name for s in self.specs]

    def total(self, decisions: Mapping[str, LayerDecision]) -> Dict[str, float]:
        """{shape: predicted model seconds} with ``decisions`` (other layers dense); with a
        table's light entries, in the cache context the plan's bytes give
        (LatencyTable.predict)."""
        return self.table.predict({n: (d.format, d.densities.get(d.format) or 1.0)
                                   for n, d in decisions.items() if d.format != DENSE})

    def objective(self, total: Mapping[str, float]) -> float:
        return sum(total[s] / self.budget[s] for s in self.budget) / len(self.budget)

    def met(self, total: Mapping[str, float]) -> bool:
        return all(total[s] <= self.budget[s] for s in self.budget)

    def planned(self, name: str, g, ratio: float, first=None) -> LayerDecision:
        """The decision for layer ``name`` pruned to ``ratio`` in ``g``, after a first
        step in granularity ``first`` (an N:M first step keeps its N:M formats, e.g. 2:4, possible)."""
        dens = planned_densities(g, ratio, self.specs)
        if isinstance(first, NM) and not isinstance(g, NM):
            base = planned_densities(first, first.fixed_ratio, self.specs)
            dens.update({k: v for k, v in base.items()  # the N:M formats stay possible
                         if v is not None and layout_registry.get(parse_format(k).layout).group})
        return decide(name, self.table.layers[name], dens, self.margin)

    def actual(self, name: str, module: nn.Module) -> LayerDecision:
        return decide_weight(name, weight_matrix(module).detach(), self.table.layers[name],
                             self.formats, self.margin)


def _ratios(g, current: float, ratio_step: float, max_ratio: float) -> List[float]:
    if isinstance(g, NM):
        return [] if current > 0 else [g.fixed_ratio]
    n = int(math.floor((max_ratio - current) / ratio_step + 1e-9))
    return [round(current + ratio_step * (i + 1), 6) for i in range(n)]


@dataclass
class NetAdaptConfig:
    """Settings of :func:`netadapt` (every field is also accepted as a keyword of it).

    Attributes:
        target_speedup / target_latency_s: exactly one; a number for every shape of the
            table, a list (one per shape, in table.shapes order) or {shape label: value}.
        finetune_fn: ``finetune_fn(model)``, the short fine-tune of each candidate (your
            loop; the masks are held while it runs). None: no fine-tuning.
        final_finetune_fn: the long fine-tune of the result (masks held). None: none.
        granularities: those the search may use per layer: "fine", "N:M" (e.g. "2:4"),
            (bm, bk) blocks; a layer keeps the granularity of its first step (after an
            N:M step it is pruned further with "fine", keeping the 2:4 format possible).
        criterion, calib: as for sparsekern.prune.prune_model.
        layers: names of the layers to prune (default every layer of the table).
        steps: the first iteration asks for 1/steps of the way from the dense latency to
            the budget; each later one for ``step_decay`` times the previous ask.
        ratio_step, max_ratio: the pruning ratios tried per layer.
        max_iterations: stop after this many iterations.
        min_metric: when the best candidate's metric is worse than this, it is rejected
            and the iteration retried with half the ask; after ``max_rejections``
            rejections in a row the search stops (keeping the last accepted model).
        higher_is_better: the direction of ``eval_fn``'s metric.
        margin: a format is used only when predicted this much faster than dense.
        seed: torch's seed before each candidate's fine-tune (fair comparison).
        on_iteration: called with each iteration's history entry.
    """

    target_speedup: Optional[Targets] = None
    target_latency_s: Optional[Targets] = None
    finetune_fn: Optional[Callable[[nn.Module], None]] = None
    final_finetune_fn: Optional[Callable[[nn.Module], None]] = None
    granularities: Sequence = ("fine",)
    criterion: str = "l1"
    calib: Any = None
    layers: Optional[Sequence[str]] = None
    steps: int = 5
    step_decay: float = 0.96
    ratio_step: float = 0.01
    max_ratio: float = 0.98
    max_iterations: int = 30
    min_metric: Optional[float] = None
    max_rejections: int = 2
    higher_is_better: bool = True
    margin: float = DEFAULT_MARGIN
    seed: int = 0
    on_iteration: Optional[Callable[[dict], None]] = None


def with_overrides(config, cls, overrides: Mapping[str, Any], func: str):
    """``config`` (None: the defaults of ``cls``) with keyword ``overrides`` applied;
    TypeError naming an unknown keyword or a config of the wrong type."""
    if config is None:
        config = cls()
    elif not isinstance(config, cls):
        raise TypeError(f"{func}: config must be {cls.__name__} or None, got "
                        f"{type(config).__name__}; pass target_speedup=... by keyword")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{func}() got unexpected keyword argument(s) {unknown}; expected "
                        f"fields of {cls.__name__}")
    return replace(config, **overrides)


def netadapt(model: nn.Module, table: LatencyTable, eval_fn: Callable[[nn.Module], float],
             config: Optional[NetAdaptConfig] = None, **overrides) -> NetAdaptResult:
    """Prune ``model`` (in place) until the table predicts it meets the latency target.

    Args:
        model: the trained dense model (pruned in place; the winner of each iteration is
            loaded into it).
        table: its latency table (sparsekern.auto.build_table), measured with the whole
            model so that the time outside the layers is known.
        eval_fn: ``eval_fn(model) -> float``, e.g. validation accuracy.
        config: a :class:`NetAdaptConfig` (default: its defaults).
        **overrides: any field of NetAdaptConfig by keyword (the keyword calls of earlier
            versions, e.g. ``netadapt(m, t, f, target_speedup=2.0, steps=3)``, still work).
    """
    cfg = with_overrides(config, NetAdaptConfig, overrides, "netadapt")
    return _Search(model, table, eval_fn, cfg).run()


class _Search:
    """One NetAdapt search: the state between iterations and each step of the loop."""

    def __init__(self, model: nn.Module, table: LatencyTable, eval_fn, cfg: NetAdaptConfig):
        budget = budgets(table, cfg.target_speedup, cfg.target_latency_s)
        self.gran, self.names = _check_netadapt(cfg, table, model)
        self.model, self.table, self.eval_fn, self.cfg = model, table, eval_fn, cfg
        self.better = (lambda a, b: a > b) if cfg.higher_is_better else (lambda a, b: a < b)
        self.st = _State(table, budget, cfg.margin)
        self.decisions = {n: self.st.actual(n, model.get_submodule(n)) for n in table.layers}
        self.plans = {n: LayerPlan() for n in self.names}
        self.masks: Dict[str, torch.Tensor] = {}
        self.total = self.st.total(self.decisions)
        self.J = self.st.objective(self.total)
        self.metric = self.metric_dense = checked_metric(eval_fn, model, dense=True)
        self.ask = max((self.J - 1.0) / cfg.steps, 0.01)
        self.history: List[dict] = []
        self.reason = "the predicted latency meets the budget at every shape"

    def run(self) -> NetAdaptResult:
        it = rejected = 0
        while not self.st.met(self.total):
            if it >= self.cfg.max_iterations:
                self.reason = f"stopped after max_iterations={self.cfg.max_iterations}"
                break
            proposals = self.propose()
            if not proposals:
                self.reason = ("no layer can be pruned further to cut the predicted latency (no "
                               "format is faster than dense at the allowed ratios, or every "
                               f"layer is at max_ratio={self.cfg.max_ratio})")
                break
            best = self.evaluate(proposals)
            entry = {"iteration": it + 1, "ask": self.ask, "winner": best[0].to_dict(),
                     "candidates": [c.to_dict() for c in proposals]}
            if math.isnan(best[0].metric) or (self.cfg.min_metric is not None and self.better(
                    self.cfg.min_metric, best[0].metric)):  # NaN: a broken model, never kept
                rejected += 1
                if self.reject(entry, best[0], rejected):
                    break
                continue
            rejected = 0
            self.accept(entry, *best)
            it += 1
        return self.finish()

    def propose(self) -> List[Candidate]:
        """This iteration's candidates, halving the ask while nothing cuts that much."""
        c = self.cfg
        args = (self.st, self.names, self.plans, self.gran, self.decisions, self.J)
        proposals = _proposals(*args, self.ask, c.ratio_step, c.max_ratio)
        while not proposals and self.ask > MIN_ASK:
            self.ask /= 2
            proposals = _proposals(*args, self.ask, c.ratio_step, c.max_ratio)
        return proposals

    def evaluate(self, proposals: List[Candidate]):
        """Prune, fine-tune and rate a copy per candidate; the best (cand, trial, masks,
        decision): the best metric, ties broken by the lower predicted latency."""
        best = None
        for cand in proposals:
            trial = copy.deepcopy(self.model)
            new_masks = _prune_one(trial, cand, self.masks, self.cfg.criterion, self.cfg.calib)
            held = {**self.masks, **new_masks}
            if self.cfg.finetune_fn is not None:
                torch.manual_seed(self.cfg.seed)
                with MaskHolder(trial, held):
                    self.cfg.finetune_fn(trial)
            cand.metric = checked_metric(self.eval_fn, trial)
            d = self.st.actual(cand.layer, trial.get_submodule(cand.layer))
            cand.format = d.format
            cand.predicted_s = self.st.total({**self.decisions, cand.layer: d})
            cand.objective = self.st.objective(cand.predicted_s)
            if (best is None or self.better(cand.metric, best[0].metric) or
                    math.isnan(best[0].metric) or  # a NaN metric loses to any number
                    (cand.metric == best[0].metric and cand.objective < best[0].objective)):
                best = (cand, trial, held, d)
        return best

    def _record(self, entry: dict) -> None:
        self.history.append(entry)
        if self.cfg.on_iteration:
            self.cfg.on_iteration(entry)

    def reject(self, entry: dict, cand: Candidate, rejected: int) -> bool:
        """Record a too-lossy winner and halve the ask; True when the search must stop."""
        entry["accepted"] = False
        self._record(entry)
        if rejected > self.cfg.max_rejections or self.ask / 2 < MIN_ASK:
            floor = ("eval_fn returned NaN for every candidate" if math.isnan(cand.metric) else
                     f"the best candidate's metric {cand.metric:.4g} is worse than "
                     f"min_metric={self.cfg.min_metric:.4g}")
            self.reason = f"{floor}, also with smaller steps"
            return True
        self.ask /= 2
        return False

    def accept(self, entry: dict, cand: Candidate, trial: nn.Module, held, d) -> None:
        """Load the winner into the model and move the search state on."""
        entry["accepted"] = True
        self.model.load_state_dict(trial.state_dict())
        self.masks = held
        first = self.plans[cand.layer].granularity or str(parse(cand.granularity))
        self.plans[cand.layer] = LayerPlan(first, cand.ratio)
        self.decisions[cand.layer] = d
        self.total, self.J, self.metric = cand.predicted_s, cand.objective, cand.metric
        self._record(entry)
        self.ask *= self.cfg.step_decay

    def finish(self) -> NetAdaptResult:
        """The final fine-tune (when there is one) and the result."""
        reached = self.st.met(self.total)
        metric_search = metric = self.metric
        if final_finetune(self.model, self.masks, self.cfg.final_finetune_fn, self.cfg.seed):
            metric = checked_metric(self.eval_fn, self.model)
            self.decisions = {n: self.st.actual(n, self.model.get_submodule(n))
                              for n in self.table.layers}
            self.total = self.st.total(self.decisions)
        return NetAdaptResult(self.masks, self.plans, self.decisions, self.history, self.total,
                              self.st.budget, reached, self.reason, self.metric_dense,
                              metric_search, metric, left_alone(self.table, self.model))


def checked_metric(eval_fn, model: nn.Module, dense: bool = False) -> float:
    """``evaluate(eval_fn, model)``; ValueError naming eval_fn and the value when it is
    infinite, or NaN on the dense model (a broken eval_fn: nothing could be compared with
    it). NaN on a pruned candidate stays the worst metric (a broken model, never kept)."""
    v = evaluate(eval_fn, model)
    if math.isinf(v) or (dense and math.isnan(v)):
        raise ValueError(f"eval_fn(model) returned {v!r}"
                         f"{' on the dense model' if dense else ''}; expected a finite number "
                         f"(e.g. validation accuracy)")
    return v


def _check_netadapt(cfg: NetAdaptConfig, table: LatencyTable, model: nn.Module):
    """The parsed granularities and the layer names; ValueError naming a bad field."""
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ValueError(f"steps must be a positive int, got {cfg.steps!r}")
    if not 0 < cfg.ratio_step < 1 or not 0 < cfg.max_ratio < 1:
        raise ValueError(f"ratio_step and max_ratio must be in (0, 1); got {cfg.ratio_step!r}, "
                         f"{cfg.max_ratio!r}")
    gran = [parse(g) for g in cfg.granularities]
    if not gran:
        raise ValueError("granularities is empty; allow at least one, e.g. ('fine',)")
    for g in gran:
        planned_densities(g, 0.5, [])  # raises for granularities the search cannot price
    return gran, table_layers(table, cfg.layers, model)


def table_layers(table: LatencyTable, layers: Optional[Sequence[str]],
                 model: Optional[nn.Module] = None) -> List[str]:
    """``layers`` (default: every layer of the table); ValueError naming those it lacks, an
    empty list, and (with ``model``) a table whose layers ``model`` lacks or holds with
    another geometry (:meth:`LatencyTable.check_fits`)."""
    names = list(table.layers) if layers is None else list(layers)
    if layers is not None and isinstance(layers, str):
        names = [layers]
    if layers is not None and not names:
        raise ValueError(f"layers is empty; name the layers to prune (the table has "
                         f"{list(table.layers)}) or pass None for all of them")
    unknown = [n for n in names if n not in table.layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not in the latency table (it has "
                         f"{list(table.layers)})")
    if model is not None:
        table.check_fits(model)
        tied = tied_layers(model, names)
        if layers is not None and tied:
            raise ValueError(f"layers {list(tied)} cannot be searched: " + "; ".join(
                f"{n}: {why}" for n, why in tied.items()) + "; untie them first (a cloned "
                "weight) or leave them out of layers")
        for n, why in tied.items():
            log.info("sparsekern.auto: %s left alone: %s", n, why)
        names = [n for n in names if n not in tied]
    return names


def left_alone(table: LatencyTable, model: nn.Module) -> Dict[str, str]:
    """{layer: why} of the layers a search leaves alone: those the table left out
    (``meta["left_alone"]``) and those of the table tied in ``model``."""
    out = dict((table.meta or {}).get("left_alone") or {})
    out.update(tied_layers(model, [n for n in table.layers]))
    return out


def final_finetune(model: nn.Module, masks: Mapping[str, torch.Tensor],
                   finetune_fn: Optional[Callable[[nn.Module], None]], seed: int) -> bool:
    """Run the long fine-tune of a search's result with its masks held (seeded); False
    when there is nothing to run (no function, or nothing was pruned)."""
    if finetune_fn is None or not masks:
        return False
    torch.manual_seed(seed)
    with MaskHolder(model, masks):
        finetune_fn(model)
    return True


def _proposals(st: _State, names, plans, gran, decisions, J, ask, ratio_step, max_ratio
               ) -> List[Candidate]:
    """Per (layer, granularity), the smallest ratio that cuts the objective by ``ask``."""
    chosen: List[Candidate] = []
    for name in names:
        plan = plans[name]
        first = None if plan.granularity is None else parse(plan.granularity)
        options = gran if first is None else _next_granularities(first)
        for g in options:
            found = None
            for r in _ratios(g, plan.ratio, ratio_step, max_ratio):
                d = st.planned(name, g, r, first)
                new_total = st.total({**decisions, name: d})
                obj = st.objective(new_total)
                if obj <= J - ask:
                    found = Candidate(name, str(g), r, new_total, obj, format=d.format)
                    break
            if found is not None:
                chosen.append(found)
    return chosen


def _next_granularities(first) -> list:
    """After a first step in ``first``: the same granularity, or fine pruning on top of
    an N:M pattern (whose ratio is fixed; a subset of a 2:4 pattern is still 2:4)."""
    return [Fine()] if isinstance(first, NM) else [first]


def _prune_one(model: nn.Module, cand: Candidate, masks, criterion, calib):
    g = parse(cand.granularity)
    prev = {cand.layer: masks[cand.layer]} if cand.layer in masks else None
    calib = calib_read(g, criterion, calib)  # one search may mix granularities that read it
    if isinstance(g, NM):
        return prune_model(model, None, granularity=g, criterion=criterion, calib=calib,
                           layers=[cand.layer], masks=prev)
    return prune_model(model, {cand.layer: cand.ratio}, granularity=g, criterion=criterion,
                       calib=calib, masks=prev)
