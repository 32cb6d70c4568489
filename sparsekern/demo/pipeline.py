"""`sparsekern.demo.run`: any model and its data, from dense to a measured sparse model.

Steps (each a function below, timed into ``report["timings_s"]``):
baseline -> latency table -> sensitivity -> search (NetAdapt or AMC, the configured
criterion as the pruning step) -> recovery (masks held) -> sparsify(layout="auto") ->
measure -> report.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import inputs, prune
from .._cli import output_folder_problem
from ..auto.amc import amc
from ..auto.choose import sparsify_auto
from ..auto.measure import time_modules
from ..auto.netadapt import NetAdaptResult, final_finetune, netadapt
from ..auto.signature import call as call_args, input_label
from ..auto.table import LatencyTable, build_table
from ..auto.verify import paired_prediction
from ..timing import TimerSettings
from ..prune.calibration import replayable
from ..prune.criteria import NEEDS_CALIB
from ..prune.granularity import NM, parse as parse_granularity
from .config import REPORT_TIMER, DemoConfig
from .reach import reachable_speedup, relaxed_targets
from .report import build_report, episode_number, print_summary, short_name, write_outputs
from .tasks import DistillTask, task_for


@dataclass
class DemoResult:
    """``report``: what report.json holds; ``model``: the sparse model; ``dense``: the dense
    model; ``table``: the latency table; ``search``: the NetAdapt/AMC result."""

    report: dict
    model: nn.Module
    dense: nn.Module
    table: LatencyTable
    search: NetAdaptResult


@dataclass
class _State:
    """What the steps hand each other."""

    cfg: DemoConfig
    task: object
    dense: nn.Module
    work: nn.Module
    xs: list
    labels: List[str]
    calib: object = None
    final_calib: object = None
    clock: Dict[str, float] = field(default_factory=dict)
    targets: Dict[str, float] = field(default_factory=dict)
    required: Dict[str, float] = field(default_factory=dict)
    dense_quality: dict = field(default_factory=dict)
    table: Optional[LatencyTable] = None
    table_how: str = ""
    sens: object = None
    search: Optional[NetAdaptResult] = None
    recovery_curve: list = field(default_factory=list)
    reprune: Optional[dict] = None
    recovery: Optional[dict] = None
    relaxed: Optional[dict] = None
    sparse: Optional[nn.Module] = None
    pruned_dense: Optional[nn.Module] = None
    quality: dict = field(default_factory=dict)
    e2e: dict = field(default_factory=dict)
    per_layer: dict = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.cfg.print_fn(line)


def per_shape(v, labels: Sequence[str], what: str,
              names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """One value per shape label from a number, a list (in label order) or a dict keyed by
    shape label or by the inputs' ``names`` (DemoConfig.labels); ValueError naming ``what``
    when the count or the keys do not match the example inputs."""
    if isinstance(v, (list, tuple)):
        if len(v) != len(labels):
            raise ValueError(f"{what} has {len(v)} values for {len(labels)} example inputs "
                             f"{list(labels)}")
        return {lab: float(x) for lab, x in zip(labels, v)}
    if isinstance(v, Mapping):
        alias = dict(zip(names or (), labels))
        by_shape = {alias.get(k, k): float(x) for k, x in v.items()}
        if len(v) != len(labels) or set(by_shape) != set(labels):
            also = f" or by its name in labels {list(names)}" if names else ""
            raise ValueError(f"{what} is keyed by {list(v)}; expected one value per example "
                             f"input, keyed by its shape {list(labels)}{also}")
        return by_shape
    return {lab: float(v) for lab in labels}


def _check_run(model, example_inputs, cfg) -> Tuple[list, List[str]]:
    """(example inputs, their shape labels) after every check that needs no forward pass:
    the model, the config's fields, out_dir, the inputs, the names and a given table."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, DemoConfig):
        raise TypeError(f"config must be a DemoConfig or None, got {type(cfg).__name__}")
    cfg.check()  # fields may have been set after construction
    problem = output_folder_problem(os.fspath(cfg.out_dir))
    if problem:
        raise ValueError(f"out_dir: {problem}")
    xs = list(example_inputs) if isinstance(example_inputs, list) else [example_inputs]
    if not xs:
        raise ValueError("example_inputs is empty; give e.g. [x[:1], x[:64]]")
    _check_layer_names(model, cfg)
    labels = [input_label(x) for x in xs]
    if cfg.labels is not None and len(cfg.labels) != len(xs):
        raise ValueError(f"labels has {len(cfg.labels)} names {list(cfg.labels)} for "
                         f"{len(xs)} example inputs {labels}; expected one name per example "
                         f"input")
    if cfg.table is not None and list(cfg.table.shapes) != labels:
        raise ValueError(f"table has shapes {cfg.table.shapes}; the example inputs have "
                         f"{labels}: expected a table measured on these inputs")
    return xs, labels


def _check_layer_names(model: nn.Module, cfg: DemoConfig) -> None:
    """cfg.layers and cfg.sensitivity_layers name modules of ``model``."""
    known = dict(model.named_modules())
    for name in ("layers", "sensitivity_layers"):
        missing = [n for n in getattr(cfg, name) or () if n not in known]
        if missing:
            some = [n for n, m in known.items() if isinstance(m, (nn.Linear, nn.Conv2d))][:6]
            raise ValueError(f"{name} names {missing}, which the model does not have; "
                             f"expected names of its layers, e.g. {some}")


def run(model: nn.Module, train, val, example_inputs, config: Optional[DemoConfig] = None, *,
        test=None, calib=None, final_calib=None, task=None) -> DemoResult:
    """Prune ``model`` to the configured speedup, recover, convert and measure it.

    Args:
        model: a trained dense model (left unchanged: its weights, and every module's
            train/eval flag, restored on return and on error; the pruned copy is returned).
        train: batches for recovery: (inputs, targets) pairs (fine-tuning with labels) or
            unlabelled input items (a tensor [B, ...], or a Mapping such as a tokenizer's
            output {"input_ids": [B, T], "attention_mask": [B, T], ...}, called as
            ``model(**item)``: distillation from the dense model).
        val: batches of the same kind; the search's metric is measured on them
            (unlabelled: at least 2 samples).
        example_inputs: one input per shape to optimize and report (a tensor, or a tuple
            of model arguments), e.g. ``[x[:1], x[:64]]`` for batch 1 and 64.
        config: a :class:`~sparsekern.demo.config.DemoConfig` (default settings if None).
        test: held-out batches for the final quality (default val).
        calib: calibration items for criteria that need them ("wanda", "sparsegpt").
        final_calib: calibration items for ``config.final_criterion``'s pruning at the
            search's plan (default ``calib``): SparseGPT needs at least as many tokens as a
            layer has inputs, more than the search's repeated pruning can afford.
        task: a task object instead of the one inferred from ``train``
            (:mod:`sparsekern.demo.tasks`).

    Unlabelled outputs are compared one vector per sample: a token-shaped output
    [B, T, ...] is mean-pooled over the tokens the batch's ``attention_mask`` keeps
    (:func:`~sparsekern.demo.tasks.sample_rows`), so batches may be padded to different
    lengths. Every data argument is read several times: a one-shot iterator (a generator)
    is read into a list once, up front; lists and DataLoaders are used as they are.
    Bad arguments raise ValueError/TypeError naming them before any model is run.
    """
    cfg = DemoConfig() if config is None else config
    xs, labels = _check_run(model, example_inputs, cfg)
    targets = per_shape(cfg.target_speedup, labels, "target_speedup", cfg.labels)
    required = per_shape(cfg.target_speedup if cfg.required_speedup is None
                         else cfg.required_speedup, labels, "required_speedup", cfg.labels)
    train, val, test, calib, final_calib = (replayable(d) for d in
                                            (train, val, test, calib, final_calib))
    _check_calib(cfg, calib, final_calib)
    if task is None:
        task = task_for(train, val, test)
        if isinstance(task, DistillTask):
            task.loss = cfg.distill_loss
    os.makedirs(cfg.out_dir, exist_ok=True)
    flags = inputs.train_flags(model)
    try:
        st = _State(cfg, task, model.eval(), copy.deepcopy(model), xs, labels, calib=calib,
                    final_calib=calib if final_calib is None else final_calib,
                    targets=targets, required=required)
        return _run_steps(st)
    finally:
        inputs.restore_flags(flags)


def _run_steps(st: _State) -> DemoResult:
    """Every step in order, timed; then the report, written and printed."""
    t_all = time.perf_counter()
    for step in (baseline, latency_table, sensitivity, search, convert, measure):
        t = time.perf_counter()
        step(st)
        st.clock.setdefault(step.__name__, time.perf_counter() - t)
    st.clock["total"] = time.perf_counter() - t_all
    report = build_report(st)
    write_outputs(st, report)
    st.clock["total"] = time.perf_counter() - t_all
    report["timings_s"] = dict(st.clock)
    write_outputs(st, report, plots=False)
    print_summary(report, st.cfg.print_fn, st.task)
    return DemoResult(report, st.sparse, st.dense, st.table, st.search)


def _show(st: _State, what: str) -> str:
    return st.cfg.labels[st.labels.index(what)] if st.cfg.labels else what


def baseline(st: _State) -> None:
    """The dense model's outputs and quality (the reference of every later metric)."""
    st.task.bind(st.dense)
    st.dense_quality = st.task.quality(st.dense)
    st.say(f"dense model: {', '.join(f'{k} {v:.4g}' for k, v in st.dense_quality.items())}")


def latency_table(st: _State) -> None:
    """Measure (or load from the cache, or take the given) latency table."""
    cfg = st.cfg
    t = time.perf_counter()
    if cfg.table is None:
        st.table = build_table(st.work, st.xs, settings=cfg.settings, cache=cfg.cache)
        c = st.table.meta.get("cache") or {}
        st.table_how = (f"{c.get('hits', 0)} cached / {c.get('misses', 0)} measured entries; "
                        f"cache {c.get('folder', 'off')}")
    else:  # its shapes were checked against the example inputs (_check_run)
        st.table, st.table_how = cfg.table, "given"
    st.clock["latency_table"] = time.perf_counter() - t
    st.say(f"latency table: {len(st.table.layers)} layers x {len(st.labels)} shapes "
           f"({st.table_how}; {st.clock['latency_table']:.1f} s)")
    st.table.save(os.path.join(cfg.out_dir, "latency_table.json"))


def _metric(st: _State):
    return st.cfg.eval_fn or st.task.metric


def sensitivity(st: _State) -> None:
    """Each candidate layer pruned alone (fine, l1): the metric per ratio."""
    cfg = st.cfg
    layers = list(cfg.sensitivity_layers or cfg.layers or st.table.layers)
    st.sens = prune.sensitivity_scan(st.work, _metric(st), ratios=cfg.sensitivity_ratios,
                                     granularity="fine", criterion="l1", layers=layers,
                                     png=os.path.join(cfg.out_dir, "sensitivity.png"),
                                     progress=False, warn=False)
    st.say(f"sensitivity: the metric ({st.task.metric_name}) with one layer pruned "
           f"(fine, l1):")
    for line in st.sens.to_markdown().splitlines():
        st.say("  " + line)


def _finetune_fns(st: _State):
    cfg, task = st.cfg, st.task
    short = cfg.finetune_fn or (
        (lambda m: task.recover(m, cfg.short_steps, cfg.lr)) if cfg.short_steps else None)

    def final(m):
        steps = cfg.final_steps or cfg.final_epochs * task.epoch_steps()
        st.recovery_curve = task.recover(m, steps, cfg.lr) if steps else []
    return short, (cfg.final_finetune_fn or final)


def _search_granularity(cfg: DemoConfig):
    """AMC's granularity: the first of cfg.granularities with a free ratio ("fine")."""
    free = [g for g in cfg.granularities if not isinstance(parse_granularity(g), NM)]
    return free[0] if free else "fine"


def _run_search(st: _State, targets: Dict[str, float], episodes: int):
    """One NetAdapt / AMC search of st.work to ``targets`` {shape: speedup}."""
    cfg = st.cfg
    short, _ = _finetune_fns(st)
    base = float(_metric(st)(st.work))
    goal = ", ".join(f"{targets[s]:.3g}x at {_show(st, s)}" for s in st.labels)
    kwargs = dict(target_speedup=[targets[s] for s in st.labels], criterion=cfg.criterion,
                  calib=st.calib, margin=cfg.margin, seed=cfg.seed)
    if cfg.strategy == "netadapt":
        st.say(f"NetAdapt search (criterion {cfg.criterion}), target speedup {goal}:")
        return netadapt(st.work, st.table, _metric(st), finetune_fn=short,
                        granularities=cfg.granularities, layers=cfg.layers,
                        steps=cfg.netadapt_steps, max_iterations=cfg.max_iterations,
                        max_ratio=cfg.max_ratio, min_metric=base - cfg.max_search_drop,
                        on_iteration=lambda e: _show_iteration(st, e), **kwargs)
    g = _search_granularity(cfg)
    floor = base - cfg.max_search_drop
    st.say(f"AMC search ({episodes} episodes, granularity {g}, ratios up to "
           f"{cfg.max_ratio:.0%}, criterion {cfg.criterion}), target {goal}; quality floor: "
           f"{st.task.metric_name} >= {floor:.4f} before recovery (dense {base:.4f} - "
           f"max_search_drop {cfg.max_search_drop:g}):")
    return amc(st.work, st.table, _metric(st), granularity=g, layers=cfg.layers,
               max_ratio=cfg.max_ratio, episodes=episodes, min_metric=floor,
               warmup_episodes=max(1, episodes // 2),
               on_episode=lambda e: _show_episode(st, e), **kwargs)


def _relax(st: _State) -> Optional[Dict[str, float]]:
    """The targets to search for: st.targets when the table can reach them with every
    searchable layer at cfg.max_ratio, else the relaxed ones (sparsekern.demo.reach), or
    None when no gain is reachable at all."""
    cfg = st.cfg
    layers = list(cfg.layers or st.table.layers)
    g = _search_granularity(cfg) if cfg.strategy == "amc" else cfg.granularities[0]
    reach = reachable_speedup(st.table, layers, g, cfg.max_ratio, cfg.margin)
    text = ", ".join(f"{reach[s]:.2f}x at {_show(st, s)}" for s in st.labels)
    st.relaxed = {"reachable": reach, "granularity": str(g), "ratio": cfg.max_ratio,
                  "targets": None}
    if all(reach[s] >= st.targets[s] for s in st.labels):
        return dict(st.targets)
    relaxed = relaxed_targets(st.targets, reach, cfg.relax_target)
    if not relaxed:
        st.say(f"the latency table allows no gain: every searchable layer at "
               f"{cfg.max_ratio:.0%} ({g}) is predicted at {text}; the model stays dense")
        return None
    st.relaxed["targets"] = relaxed
    short = ", ".join(f"{_show(st, s)} ({st.targets[s]:.2f}x wanted)" for s in st.labels
                      if reach[s] < st.targets[s])
    st.say(f"the target is out of reach with these kernels at {short}: every searchable "
           f"layer at {cfg.max_ratio:.0%} ({g}) is predicted at {text}; searching for "
           f"{cfg.relax_target:.0%} of that gain instead (the checks still require the "
           f"original speedups)")
    return relaxed


def search(st: _State) -> None:
    """NetAdapt or AMC to the target speedup, the configured criterion pruning each step
    (first to a relaxed target when the table cannot reach it, cfg.relax_target), never
    below the quality floor (the dense metric - cfg.max_search_drop: AMC falls back to the
    fastest plan above it, or to none); then the final recovery with the masks held.

    No second search at a smaller target follows when nothing above the floor meets the
    (relaxed) target: under a floor AMC does not clip its actions to the budget, so it
    already samples plans lighter than any target and returns the fastest one above the
    floor; a search for a smaller target would rate the same light plans again."""
    cfg = st.cfg
    _, final = _finetune_fns(st)
    t = time.perf_counter()
    targets = _relax(st) if cfg.relax_target > 0 else st.targets
    if targets is None:  # nothing pays: an empty search result (the dense model)
        targets, episodes = st.targets, 1
    else:
        episodes = cfg.amc_episodes
    st.search = _run_search(st, targets, episodes)
    st.say(f"search: {st.search.reason} ({time.perf_counter() - t:.1f} s)")
    _show_plan(st)
    st.clock["search"] = time.perf_counter() - t
    if cfg.final_criterion and st.search.masks:
        t = time.perf_counter()
        reprune(st)
        st.clock["reprune"] = time.perf_counter() - t
    recover(st, final)


def recover(st: _State, final) -> None:
    """The final recovery (``final(model)``) with the masks held. Its weights are kept only
    when they do not lower the validation metric, else the weights before it are restored: a
    lightly pruned model can lose more to the optimizer's steps than the recovery gives back
    (MiniLM with one layer pruned went from 0.978 to 0.969 in 64 distillation steps at lr
    2e-4; the DistillTask now scales its lr by the distance to dense and keeps its best
    validation rating, sparsekern.demo.tasks, so this is a guard for other recoveries)."""
    t = time.perf_counter()
    before = {k: v.detach().clone() for k, v in st.work.state_dict().items()}
    res = st.search
    runs = len(getattr(st.task, "runs", []))
    if final_finetune(st.work, res.masks, final, st.cfg.seed):
        after = float(_metric(st)(st.work))
        kept = res.metric_search is None or after >= res.metric_search
        if not kept:
            st.work.load_state_dict(before)
        res.metric_final = after if kept else res.metric_search
        st.recovery = {"metric_before": res.metric_search, "metric_after": after, "kept": kept}
        if len(getattr(st.task, "runs", [])) > runs:  # a DistillTask: its lr and ratings
            st.recovery["distill"] = st.task.runs[-1]
    st.clock["recovery"] = time.perf_counter() - t
    curve, rec = st.recovery_curve, st.recovery
    if not res.masks:
        st.say("recovery: none (nothing was pruned)")
        return
    st.say(f"recovery ({st.task.kind}, masks held, {len(curve)} steps, "
           f"{st.clock['recovery']:.1f} s): metric {res.metric_search:.4f} -> "
           f"{rec['metric_after'] if rec else float('nan'):.4f}"
           + (f"; loss {curve[0]:.4g} -> {curve[-1]:.4g}" if curve else "")
           + _distill_text(rec)
           + ("" if rec is None or rec["kept"] else
              "; lower than before it: the weights before the recovery are kept"))


def _distill_text(rec: Optional[dict]) -> str:
    """The distillation's learning rate and validation ratings, for the recovery line."""
    run = (rec or {}).get("distill")
    if not run:
        return ""
    ratings = ", ".join(f"{m:.4f}" for _, m in run["ratings"])
    return (f"; lr {run['lr_used']:.3g} ({run['lr']:.3g} scaled by the distance to dense "
            f"{1 - run['metric_before']:.4f}); validation at steps "
            f"{', '.join(str(s) for s, _ in run['ratings'])}: {ratings}; kept step "
            f"{run['kept_step']}")


def _plan_groups(plans) -> Dict[str, Dict[str, float]]:
    groups: Dict[str, Dict[str, float]] = {}
    for n, p in plans.items():
        if p.granularity is not None and p.ratio > 0:
            groups.setdefault(p.granularity, {})[n] = p.ratio
    return groups


def _check_calib(cfg: DemoConfig, calib, final_calib) -> None:
    """A criterion that reads calibration data without any: a ValueError before any work
    (it would fail in the search's first pruning step, after the latency table)."""
    given = {"criterion": calib, "final_criterion": calib if final_calib is None else final_calib}
    for field_name, data in given.items():
        crit = getattr(cfg, field_name)
        if crit in NEEDS_CALIB and data is None:
            raise ValueError(f"config.{field_name} {crit!r} needs calibration data: pass "
                             f"calib=... (batches of model inputs)"
                             f"{' or final_calib=...' if field_name == 'final_criterion' else ''}")


def reprune(st: _State) -> None:
    """Prune the dense weights again at the search's plan with cfg.final_criterion; keep
    whichever masks (the search's or these) give the better metric, before recovery."""
    cfg = st.cfg
    fresh, masks = copy.deepcopy(st.dense), {}
    for g, ratios in _plan_groups(st.search.plans).items():
        gran = parse_granularity(g)
        calib = prune.calib_read(gran, cfg.final_criterion, st.final_calib)
        if isinstance(gran, NM):
            masks.update(prune.prune_model(fresh, None, granularity=gran, criterion=cfg.final_criterion,
                                           calib=calib, layers=list(ratios)))
            more = {n: r for n, r in ratios.items() if r > gran.fixed_ratio + 1e-9}
            if more:  # fine pruning on top of the N:M pattern (still N:M)
                masks.update(prune.prune_model(fresh, more, granularity="fine",
                                               criterion=cfg.final_criterion, calib=calib,
                                               masks={n: masks[n] for n in more}))
        else:
            masks.update(prune.prune_model(fresh, ratios, granularity=gran,
                                           criterion=cfg.final_criterion, calib=calib))
    before, after = st.search.metric_search, float(_metric(st)(fresh))
    keep = after >= before
    st.say(f"pruning step again with {cfg.final_criterion} at the search's plan: metric "
           f"{after:.4f} (search's {cfg.criterion} masks: {before:.4f}); keeping "
           f"{cfg.final_criterion if keep else cfg.criterion}'s")
    st.reprune = {"criterion": cfg.final_criterion, "metric": after,
                  "search_metric": before, "kept": cfg.final_criterion if keep else cfg.criterion}
    if keep:
        st.work.load_state_dict(fresh.state_dict())
        st.search.masks = {n: m for n, m in masks.items()}
        st.search.metric_search = after


def _show_iteration(st: _State, entry: dict) -> None:
    w = entry["winner"]
    pred = ", ".join(f"{w['predicted_s'][s] * 1e3:.3f} ms at {_show(st, s)}" for s in st.labels)
    st.say(f"  step {entry['iteration']}: {w['layer']} {w['granularity']} {w['ratio']:.0%} -> "
           f"{w['format']}; predicted {pred}; metric {w['metric']:.4f} "
           f"({len(entry['candidates'])} candidates)" + ("" if entry["accepted"] else
                                                          " - rejected"))


def _ratios_text(ratios: Dict[str, float]) -> str:
    pruned = {n: r for n, r in ratios.items() if r > 0}
    if not pruned:
        return "nothing pruned"
    noun = "layer" if len(pruned) == 1 else "layers"
    return f"{len(pruned)} {noun} pruned: " + ", ".join(f"{short_name(n)} {r:.0%}"
                                                        for n, r in pruned.items())


def _show_episode(st: _State, e: dict) -> None:
    """Print an AMC history entry ``e`` (its "episode" a 0-based index): the first and every
    tenth, numbered as report.json numbers them (:func:`~.report.episode_number`)."""
    number = episode_number(e["episode"])
    if number % 10 == 0 or number == 1:
        st.say(f"  episode {number}: {_ratios_text(e['ratios'])}; metric "
               f"{e['metric']:.4f}" + ("" if e["feasible"] else " (misses the budget)")
               + ("" if e.get("eligible", True) else " (below the floor)"))


def _show_plan(st: _State) -> None:
    """The plan the search chose and why (AMC: the floor, the choice, the predicted speedup)."""
    res = st.search
    if getattr(res, "choice", None) is None:  # NetAdapt: its iterations say it all
        return
    n_eligible = sum(1 for h in res.history if h.get("eligible", True))
    floor = "none" if res.min_metric is None else f"{res.min_metric:.4f}"
    st.say(f"  floor {floor}: {n_eligible} of {len(res.history)} episodes at or above it")
    if res.best_episode is None:
        st.say("  chosen plan: none (the model stays dense)")
        return
    dense = st.table.predict()
    speed = ", ".join(f"{dense[s] / res.predicted_s[s]:.2f}x at {_show(st, s)}" for s in st.labels)
    why = {"budget": "the best metric among the episodes that meet the latency budget",
           "fastest": "no episode above the floor met the budget: the fastest one that is "
                      "above it"}[res.choice]
    st.say(f"  chosen plan (episode {episode_number(res.best_episode)}, {why}): "
           f"{_ratios_text({n: p.ratio for n, p in res.plans.items()})}; metric "
           f"{res.metric_search:.4f}; predicted {speed}")


def convert(st: _State) -> None:
    """sparsify(layout="auto") with the table: each layer's fastest format, or dense."""
    st.pruned_dense = copy.deepcopy(st.work)
    st.sparse = sparsify_auto(st.work, st.table, margin=st.cfg.margin)
    st.quality = st.task.quality(st.sparse)


def measure(st: _State) -> None:
    """End to end dense vs sparse in windows (paired with the table's prediction), and
    each layer dense vs sparse on its real input."""
    cfg = st.cfg
    context = st.table.meta.get("context") or "warm"
    decisions = st.sparse.sparsekern_decisions
    choices = {n: (d.format, d.density) for n, d in decisions.items()}
    st.e2e = paired_prediction(st.table, st.dense, st.sparse, choices, st.xs,
                               windows=cfg.windows, timer=cfg.timer, context=context,
                               seed=cfg.seed)
    # Layers left dense are the same module in both models: nothing to compare.
    converted = [n for n, d in decisions.items() if d.format != "dense"]
    if cfg.layer_latency and converted:
        st.per_layer = measure_layers(st.pruned_dense, st.sparse, st.xs, converted,
                                      cfg.timer, context)


@torch.no_grad()
def _layer_inputs(model: nn.Module, x, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    seen: Dict[str, torch.Tensor] = {}
    hs = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: seen.setdefault(n, a[0].detach().clone())) for n in names]
    try:
        call_args(model, x)
    finally:
        for h in hs:
            h.remove()
    return seen


def measure_layers(dense: nn.Module, sparse: nn.Module, example_inputs, names: Sequence[str],
                   timer: TimerSettings = REPORT_TIMER, context: str = "warm"
                   ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{shape: {layer: {"dense": s, "sparse": s}}}: each layer of ``dense`` against the same
    layer of ``sparse`` on its real input, interleaved, each sample starting in the cache
    state ``context`` ("warm" / "llc" / "cold", as the latency table was measured)."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    device = next(dense.parameters()).device
    xs = list(example_inputs) if isinstance(example_inputs, list) else [example_inputs]
    for x in xs:
        lab = input_label(x)
        ins = _layer_inputs(dense, x, names)
        out[lab] = {}
        for n in names:
            if n not in ins:
                continue
            res = time_modules({"dense": dense.get_submodule(n), "sparse": sparse.get_submodule(n)},
                               ins[n], device, timer, context)
            out[lab][n] = {"dense": res["dense"]["median_s"], "sparse": res["sparse"]["median_s"]}
    return out
