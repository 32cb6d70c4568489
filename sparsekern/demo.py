"""`sparsekern demo`: from a trained dense model to a measured faster sparse one, end to end.

The embedded default (offline): an MLP 64 -> 2048 -> 2048 -> 10 on scikit-learn's digits
(8x8 images, 1797 samples, shipped with scikit-learn). Steps:

1. train the dense model (or load the copy cached after the first run);
2. measure the latency table on this machine (or load it from the cache): every layer,
   dense and in each format over a grid of sparsities, at batch 1 and 64;
3. sensitivity analysis (each layer pruned alone, validation accuracy);
4. NetAdapt search to the target speedup, short fine-tune per candidate;
5. long fine-tune, then convert every layer to its fastest format (dense when no format
   is faster) with the latency table;
6. measure: accuracy dense vs pruned on the test split, per-layer and end-to-end latency at
   batch 1 and 64, predicted vs measured; write the plots and report.json to --out.

Your own model and data, in Python::

    from sparsekern import demo
    result = demo.run(model, train_loader, val_loader, example_inputs=[x[:1], x[:64]],
                      target_speedup=[2.3, 1.7], test_loader=test_loader, out_dir="out")
    result.model          # the sparse model; result.report is what report.json holds
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from . import prune
from .auto.amc import amc
from .auto.cache import cache_root, digest
from .auto.choose import DEFAULT_MARGIN, sparsify_auto
from .auto.formats import DENSE
from .auto.measure import MeasureSettings, time_modules
from .auto.netadapt import NetAdaptResult, netadapt
from .auto.plots import plot_layer_latency, plot_table
from .auto.signature import call, input_label
from .auto.table import LatencyTable, build_table
from .auto.verify import paired_prediction
from .bench.timing import QUICK_TIMER, TimerSettings
from .prune.granularity import NM, parse as parse_granularity

#: What the default demo must show on a 2-core CPU (the issue's targets).
REQUIRED_SPEEDUP = (2.0, 1.5)       # at batch 1 and batch 64
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


# ----------------------------------------------------------------------------- helpers

class Steps:
    """A loader that yields exactly ``steps`` batches of ``loader`` (cycling); has a len."""

    def __init__(self, loader, steps: int):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.loader, self.steps = loader, int(steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)),
                                self.steps)


@dataclass
class DemoResult:
    """``report``: what report.json holds; ``model``: the sparse model; ``dense``: the dense
    model; ``table``: the latency table; ``search``: the NetAdapt result."""

    report: dict
    model: nn.Module
    dense: nn.Module
    table: LatencyTable
    search: NetAdaptResult


def _inputs(example_inputs) -> List:
    xs = list(example_inputs) if isinstance(example_inputs, (list,)) else [example_inputs]
    if not xs:
        raise ValueError("example_inputs is empty; give e.g. [x[:1], x[:64]]")
    return xs


def _per_shape(v, labels: Sequence[str], what: str) -> Dict[str, float]:
    if isinstance(v, (list, tuple)):
        if len(v) != len(labels):
            raise ValueError(f"{what} has {len(v)} values for {len(labels)} example inputs "
                             f"{list(labels)}")
        return {lab: float(x) for lab, x in zip(labels, v)}
    if isinstance(v, dict):
        return {lab: float(v[lab]) for lab in labels}
    return {lab: float(v) for lab in labels}


def _ms(t: Optional[float]) -> str:
    return "n/a" if t is None else f"{t * 1e3:.3f} ms"


@torch.no_grad()
def _layer_inputs(model: nn.Module, x, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    seen: Dict[str, torch.Tensor] = {}
    hs = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: seen.setdefault(n, a[0].detach().clone())) for n in names]
    try:
        call(model, x)
    finally:
        for h in hs:
            h.remove()
    return seen


def measure_layers(dense: nn.Module, sparse: nn.Module, example_inputs, names: Sequence[str],
                   timer: TimerSettings = REPORT_TIMER, context: str = "warm"
                   ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{shape: {layer: {"dense": s, "sparse": s}}}: each layer of ``dense`` against the same
    layer of ``sparse`` on its real input, interleaved, each sample starting in the cache
    state ``context`` ("warm" / "cold", as the latency table was measured)."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    device = next(dense.parameters()).device
    for x in _inputs(example_inputs):
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


# ----------------------------------------------------------------------------- run

def run(model: nn.Module, train_loader, val_loader, example_inputs,
        target_speedup=SEARCH_SPEEDUP[0], *, test_loader=None,
        eval_fn: Optional[Callable[[nn.Module], float]] = None,
        finetune_fn: Optional[Callable[[nn.Module], None]] = None,
        final_finetune_fn: Optional[Callable[[nn.Module], None]] = None,
        granularities: Sequence = ("fine", "2:4"), criterion: str = "l1",
        short_steps: int = 20, final_epochs: int = 3, lr: float = prune.DEFAULT_FINETUNE_LR,
        max_iterations: int = 20, max_search_drop: float = 0.03,
        required_speedup=None, max_accuracy_drop: float = MAX_ACCURACY_DROP,
        max_prediction_error: float = MAX_PREDICTION_ERROR,
        sensitivity_ratios: Sequence[float] = SENSITIVITY_RATIOS,
        settings: Optional[MeasureSettings] = None, cache=None, margin: float = DEFAULT_MARGIN,
        table: Optional[LatencyTable] = None, timer: TimerSettings = REPORT_TIMER,
        windows: int = REPORT_WINDOWS, strategy: str = "netadapt", amc_episodes: int = 60,
        out_dir: str = "sparsekern-demo",
        extra: Optional[dict] = None,
        print_fn: Callable[[str], None] = print, seed: int = 0) -> DemoResult:
    """Sensitivity -> NetAdapt to ``target_speedup`` -> fine-tune -> auto formats -> measure.

    Args:
        model: a trained dense model (left unchanged; the pruned copy is returned).
        train_loader, val_loader: (inputs, targets) batches; the search fine-tunes on the
            first and picks candidates by accuracy on the second.
        example_inputs: a tensor or a list of them, one per input shape to optimize and
            report (e.g. ``[x[:1], x[:64]]`` for batch 1 and 64).
        target_speedup: the search's target over the dense model: one number, or one per
            example input.
        test_loader: where the final accuracies are measured (default val_loader).
        eval_fn: ``eval_fn(model) -> float`` for the search (default: accuracy on
            val_loader; higher is better).
        finetune_fn / final_finetune_fn: your training loops (the masks are held while they
            run); default: ``short_steps`` Adam steps / ``final_epochs`` epochs of
            sparsekern.prune.fine_tune on train_loader at ``lr``.
        granularities: what the search may use per layer ("fine", "2:4", (bm, bk), ...).
        strategy: "netadapt" (sparsekern.auto.netadapt) or "amc" (sparsekern.auto.amc, a
            learned per-layer ratio policy, ``amc_episodes`` episodes, in the first
            granularity of ``granularities`` that has a free ratio).
        max_search_drop: a search candidate whose metric is more than this below the dense
            model's is rejected (the step is retried smaller, then the search stops).
        required_speedup, max_accuracy_drop, max_prediction_error: the checks reported
            (required_speedup defaults to target_speedup).
        settings, cache: latency-table grid/timer and cache (see sparsekern.auto.build_table).
        table: a latency table to use instead of measuring one (e.g. loaded from an earlier
            run's latency_table.json).
        timer: the timer of the final per-layer and end-to-end measurements.
        windows: the end-to-end measurement is repeated in this many windows, each also
            re-timing the table's ingredients, so that the prediction is checked against
            a measurement of the same moment (sparsekern.auto.verify.paired_prediction).
        out_dir: where report.json, the plots, the latency table and the sparse model go.
        extra: more fields for the report (e.g. the dataset's description).
    """
    if strategy not in ("netadapt", "amc"):
        raise ValueError(f"strategy must be 'netadapt' or 'amc', got {strategy!r}")
    os.makedirs(out_dir, exist_ok=True)
    xs = _inputs(example_inputs)
    labels = [input_label(x) for x in xs]
    targets = _per_shape(target_speedup, labels, "target_speedup")
    required = _per_shape(required_speedup if required_speedup is not None else target_speedup,
                          labels, "required_speedup")
    test_loader = val_loader if test_loader is None else test_loader
    eval_fn = eval_fn or (lambda m: prune.accuracy(m, val_loader))
    finetune_fn = finetune_fn or (lambda m: prune.train(
        m, Steps(train_loader, short_steps), epochs=1, lr=lr, progress=False))
    final_finetune_fn = final_finetune_fn or (lambda m: prune.train(
        m, train_loader, epochs=final_epochs, lr=lr, progress=False))
    clock: Dict[str, float] = {}
    t_all = time.perf_counter()

    dense = model.eval()
    work = copy.deepcopy(model)
    acc_dense = prune.accuracy(dense, test_loader)
    print_fn(f"dense model: test accuracy {acc_dense:.2%}")

    t = time.perf_counter()
    if table is None:
        table = build_table(work, xs, settings=settings, cache=cache)
        c = table.meta.get("cache") or {}
        how = (f"{c.get('hits', 0)} cached / {c.get('misses', 0)} measured entries; cache "
               f"{c.get('folder', 'off')}")
    else:
        how = "given"
        if list(table.shapes) != labels:
            raise ValueError(f"table has shapes {table.shapes}; the example inputs have {labels}")
    clock["latency_table"] = time.perf_counter() - t
    print_fn(f"latency table: {len(table.layers)} layers x {len(labels)} shapes ({how}; "
             f"{clock['latency_table']:.1f} s)")
    table.save(os.path.join(out_dir, "latency_table.json"))

    t = time.perf_counter()
    sens = prune.sensitivity_scan(work, eval_fn, ratios=sensitivity_ratios, granularity="fine",
                                  criterion=criterion, layers=list(table.layers),
                                  png=os.path.join(out_dir, "sensitivity.png"), progress=False,
                                  warn=False)
    clock["sensitivity"] = time.perf_counter() - t
    print_fn(f"sensitivity ({clock['sensitivity']:.1f} s): the metric with one layer pruned "
             f"(fine, {criterion}):")
    for line in sens.to_markdown().splitlines():
        print_fn("  " + line)

    t = time.perf_counter()
    base = float(eval_fn(work))

    def show(entry):
        w = entry["winner"]
        pred = ", ".join(f"{_ms(w['predicted_s'][s])} at {s}" for s in labels)
        print_fn(f"  step {entry['iteration']}: {w['layer']} {w['granularity']} "
                 f"{w['ratio']:.0%} -> {w['format']}; predicted {pred}; metric "
                 f"{w['metric']:.4f} ({len(entry['candidates'])} candidates)"
                 + ("" if entry["accepted"] else " - rejected"))

    goal = ", ".join(f"{targets[s]:g}x at {s}" for s in labels)
    if strategy == "netadapt":
        print_fn(f"NetAdapt search, target speedup {goal}:")
        search = netadapt(work, table, eval_fn, target_speedup=[targets[s] for s in labels],
                          finetune_fn=finetune_fn, final_finetune_fn=final_finetune_fn,
                          granularities=granularities, criterion=criterion,
                          max_iterations=max_iterations, min_metric=base - max_search_drop,
                          margin=margin, seed=seed, on_iteration=show)
    else:  # "amc" (checked on entry)
        free = [g for g in granularities if not isinstance(parse_granularity(g), NM)]
        g = free[0] if free else "fine"
        print_fn(f"AMC search ({amc_episodes} episodes, granularity {g}), target speedup "
                 f"{goal}:")

        def show_episode(e):
            if (e["episode"] + 1) % 10 == 0 or e["episode"] == 0:
                ratios = ", ".join(f"{n} {r:.0%}" for n, r in e["ratios"].items())
                print_fn(f"  episode {e['episode'] + 1}: {ratios}; metric {e['metric']:.4f}"
                         + ("" if e["feasible"] else " (misses the budget)"))

        search = amc(work, table, eval_fn, target_speedup=[targets[s] for s in labels],
                     final_finetune_fn=final_finetune_fn, granularity=g, criterion=criterion,
                     episodes=amc_episodes, warmup_episodes=max(1, amc_episodes // 6),
                     margin=margin, seed=seed, on_episode=show_episode)
    clock["search_and_finetune"] = time.perf_counter() - t
    print_fn(f"search: {search.reason} ({clock['search_and_finetune']:.1f} s with the final "
             f"fine-tune)")

    pruned_dense = copy.deepcopy(work)
    sparse = sparsify_auto(work, table, margin=margin)
    decisions = sparse.sparsekern_decisions
    acc_sparse = prune.accuracy(sparse, test_loader)

    t = time.perf_counter()
    context = table.meta.get("context") or "warm"
    choices = {n: (d.format, d.density) for n, d in decisions.items()}
    e2e = paired_prediction(table, dense, sparse, choices, xs, windows=windows, timer=timer,
                            context=context, seed=seed)
    per_layer = measure_layers(pruned_dense, sparse, xs, list(table.layers), timer, context)
    clock["measure"] = time.perf_counter() - t

    sparsity = prune.sparsity(pruned_dense, list(table.layers))
    layers = []
    for n, d in decisions.items():
        W = pruned_dense.get_submodule(n).weight
        layers.append({
            "name": n, "shape": list(W.reshape(W.shape[0], -1).shape), "format": d.format,
            "layout": d.layout, "blocksize": list(d.blocksize) if d.blocksize else None,
            "sparsity": sparsity[n], "stored_fraction": d.density,
            "granularity": search.plans[n].granularity if n in search.plans else None,
            "reason": d.reason,
            "latency_s": {s: {"dense": per_layer[s][n]["dense"], "sparse": per_layer[s][n]["sparse"],
                              "predicted": d.predicted_s.get(s), "predicted_dense": d.dense_s.get(s)}
                          for s in labels if n in per_layer.get(s, {})}})
    latency = {}
    for s in labels:
        m = e2e[s]
        latency[s] = {"dense_s": m["dense_s"], "sparse_s": m["sparse_s"],
                      "speedup": m["dense_s"] / m["sparse_s"],
                      "predicted_sparse_s": m["predicted_s"], "prediction_error": m["error"],
                      "table_predicted_sparse_s": m["table_predicted_s"],
                      "table_prediction_error": m["table_error"],
                      "table_predicted_dense_s": m["table_dense_s"], "drift": m["drift"],
                      "windows": m["windows"],
                      "target_speedup": targets[s], "required_speedup": required[s]}
    drop = acc_dense - acc_sparse
    converted = sum(1 for d in decisions.values() if d.format != DENSE)
    checks = {
        "speedup": {s: {"required": required[s], "measured": latency[s]["speedup"],
                        "ok": latency[s]["speedup"] >= required[s]} for s in labels},
        "accuracy": {"max_drop": max_accuracy_drop, "drop": drop,
                     "ok": drop <= max_accuracy_drop + 1e-12},
        "auto_not_slower": {s: {"speedup": latency[s]["speedup"],
                                "tolerance": SLOWER_TOLERANCE, "layers_converted": converted,
                                # no layer converted: the model *is* the dense model
                                "ok": (not converted or
                                       latency[s]["speedup"] >= 1.0 - SLOWER_TOLERANCE)}
                            for s in labels},
        "prediction": {s: {"max_error": max_prediction_error,
                           "error": latency[s]["prediction_error"],
                           "ok": abs(latency[s]["prediction_error"]) <= max_prediction_error}
                       for s in labels},
    }
    checks["all_ok"] = (all(v["ok"] for v in checks["speedup"].values()) and
                        checks["accuracy"]["ok"] and
                        all(v["ok"] for v in checks["auto_not_slower"].values()) and
                        all(v["ok"] for v in checks["prediction"].values()))

    plots = {"sensitivity": os.path.join(out_dir, "sensitivity.png")}
    plots["layer_latency"] = plot_layer_latency(
        per_layer, {n: d.format for n, d in decisions.items()},
        os.path.join(out_dir, "layer_latency.png"))
    plots["latency_table"] = plot_table(table, os.path.join(out_dir, "latency_table.png"))
    model_path = os.path.join(out_dir, "model.sparse.pt")
    prune.save_sparse(sparse, model_path)
    clock["total"] = time.perf_counter() - t_all

    import sparsekern
    report = {
        "sparsekern_version": sparsekern.__version__,
        "machine": table.meta.get("machine"), "software": table.meta.get("software"),
        "shapes": labels,
        "accuracy": {"dense": acc_dense, "pruned": acc_sparse, "drop": drop,
                     "validation_dense": search.metric_dense,
                     "validation_after_search": search.metric_search,
                     "validation_final": search.metric_final},
        "layers": layers, "latency": latency, "checks": checks,
        "search": search.to_dict(),
        "sensitivity": {"ratios": sens.ratios, "baseline": sens.baseline, "curves": sens.curves,
                        "granularity": sens.granularity, "criterion": sens.criterion},
        "plots": plots, "files": {"latency_table": os.path.join(out_dir, "latency_table.json"),
                                  "model": model_path, "report": os.path.join(out_dir, "report.json")},
        "config": {"strategy": strategy, "granularities": [str(g) for g in granularities],
                   "criterion": criterion,
                   "short_steps": short_steps, "final_epochs": final_epochs, "lr": lr,
                   "max_iterations": max_iterations, "margin": margin, "seed": seed,
                   "target_speedup": targets},
        "timings_s": clock, "latency_table_cache": table.meta.get("cache"),
        "cache_context": context,
        "load_average": _loadavg(),
    }
    if extra:
        report.update(extra)
    with open(report["files"]["report"], "w") as f:
        json.dump(report, f, indent=1, default=float)
    _print_summary(report, print_fn)
    return DemoResult(report, sparse, dense, table, search)


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def _print_summary(r: dict, print_fn) -> None:
    a = r["accuracy"]
    print_fn("")
    print_fn(f"accuracy (test): dense {a['dense']:.2%}, pruned {a['pruned']:.2%} "
             f"(drop {100 * a['drop']:+.2f} points)")
    print_fn("layers:")
    shapes = r["shapes"]
    head = f"  {'layer':<10} {'shape':>11} {'format':>10} {'sparsity':>8}  " + "  ".join(
        f"{'dense/sparse ms at ' + s:>28}" for s in shapes)
    print_fn(head)
    for L in r["layers"]:
        lat = "  ".join(
            f"{L['latency_s'][s]['dense'] * 1e3:>13.3f} /{L['latency_s'][s]['sparse'] * 1e3:>11.3f}"
            if s in L["latency_s"] else f"{'-':>28}" for s in shapes)
        print_fn(f"  {L['name']:<10} {'x'.join(map(str, L['shape'])):>11} {L['format']:>10} "
                 f"{L['sparsity']:>8.1%}  {lat}")
    for L in r["layers"]:
        if L["format"] == DENSE:
            print_fn(f"  {L['name']} stays dense: {L['reason']}")
    n_win = len(next(iter(r["latency"].values()))["windows"]) if r["latency"] else 0
    print_fn(f"end to end (median of {n_win} windows; the prediction is the latency table's "
             f"sum of layers, its entries re-timed in the same windows):")
    for s in shapes:
        x = r["latency"][s]
        print_fn(f"  input {s}: dense {_ms(x['dense_s'])}, sparse {_ms(x['sparse_s'])}, speedup "
                 f"{x['speedup']:.2f}x (required {x['required_speedup']:g}x); predicted "
                 f"{_ms(x['predicted_sparse_s'])} ({100 * x['prediction_error']:+.1f}% vs measured)")
        print_fn(f"    the table as the search used it predicted {_ms(x['table_predicted_sparse_s'])}"
                 f" ({100 * x['table_prediction_error']:+.1f}%); the dense model runs "
                 f"{100 * x['drift']:+.1f}% against its prediction (machine drift since the "
                 f"table was measured)")
    c = r["checks"]
    ok = lambda b: "OK  " if b else "FAIL"  # noqa: E731
    print_fn("checks:")
    for s, v in c["speedup"].items():
        print_fn(f"  [{ok(v['ok'])}] speedup at {s}: {v['measured']:.2f}x >= {v['required']:g}x")
    print_fn(f"  [{ok(c['accuracy']['ok'])}] accuracy drop {100 * c['accuracy']['drop']:.2f} "
             f"points <= {100 * c['accuracy']['max_drop']:g}")
    for s, v in c["auto_not_slower"].items():
        why = (f"{v['speedup']:.2f}x; {v['tolerance']:.0%} noise allowance" if
               v["layers_converted"] else "no layer converted: it is the dense model")
        print_fn(f"  [{ok(v['ok'])}] layout='auto' not slower than dense at {s} ({why})")
    for s, v in c["prediction"].items():
        print_fn(f"  [{ok(v['ok'])}] predicted latency within {v['max_error']:.0%} of measured "
                 f"at {s} ({100 * v['error']:+.1f}%)")
    print_fn(f"wrote {r['files']['report']}, plots: " + ", ".join(r["plots"].values()))
    print_fn(f"total {r['timings_s']['total']:.1f} s")


# ----------------------------------------------------------------------------- the default

class DigitsMLP(nn.Sequential):
    """64 -> hidden -> ... -> hidden -> 10 with ReLU; layers fc1, fc2, ..., head."""

    def __init__(self, hidden: int = 2048, hidden_layers: int = 2):
        layers = [("fc1", nn.Linear(64, hidden)), ("relu1", nn.ReLU())]
        for i in range(2, hidden_layers + 1):
            layers += [(f"fc{i}", nn.Linear(hidden, hidden)), (f"relu{i}", nn.ReLU())]
        layers.append(("head", nn.Linear(hidden, 10)))
        from collections import OrderedDict
        super().__init__(OrderedDict(layers))


def digits_data(seed: int = 0, batch_size: int = 64):
    """(train, val, test) DataLoaders over sklearn's digits (70/10/20 split), pixels / 16."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the demo's default data set is scikit-learn's digits: "
                          "pip install scikit-learn (or sparsekern[demo])") from e
    from torch.utils.data import DataLoader, TensorDataset
    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    n_tr, n_va = int(0.7 * len(X)), int(0.1 * len(X))
    parts = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(X[parts[0]], y[parts[0]]), batch_size=batch_size,
                       shuffle=True, generator=gen)
    val, test = (DataLoader(TensorDataset(X[p], y[p]), batch_size=256) for p in parts[1:])
    return train, val, test


def trained_digits_model(hidden: int, hidden_layers: int, epochs: int, seed: int, train_loader,
                         use_cache: bool = True, print_fn=print) -> nn.Module:
    """The default model, trained (Adam, lr 1e-3) or loaded from the cache of an earlier run."""
    key = {"model": "DigitsMLP", "hidden": hidden, "hidden_layers": hidden_layers,
           "epochs": epochs, "seed": seed, "lr": 1e-3, "torch": torch.__version__, "v": 1}
    path = cache_root() / "models" / f"digits-{digest(key)}.pt"
    torch.manual_seed(seed)
    model = DigitsMLP(hidden, hidden_layers)
    if use_cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            print_fn(f"dense model: loaded the trained copy from {path}")
            return model.eval()
        except Exception as e:  # a damaged file: train again
            print_fn(f"dense model: cached copy unreadable ({type(e).__name__}); training")
    t = time.perf_counter()
    prune.train(model, train_loader, epochs=epochs, lr=1e-3, progress=False)
    print_fn(f"dense model: trained {epochs} epochs in {time.perf_counter() - t:.1f} s")
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model.eval()


def add_arguments(p) -> None:
    """The demo's command-line options (argparse)."""
    p.add_argument("--out", default="sparsekern-demo", help="output folder (default %(default)s)")
    p.add_argument("--hidden", type=int, default=2048, help="hidden width (default %(default)s)")
    p.add_argument("--hidden-layers", type=int, default=2,
                   help="hidden layers of the MLP (default %(default)s)")
    p.add_argument("--epochs", type=int, default=8, help="dense training epochs (default %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64],
                   help="batch sizes to optimize and measure (default 1 64)")
    p.add_argument("--target-speedup", type=float, nargs="+", default=list(SEARCH_SPEEDUP),
                   help="the search's target, one per batch or one for all (default 3 2)")
    p.add_argument("--require-speedup", type=float, nargs="+", default=list(REQUIRED_SPEEDUP),
                   help="speedups the checks require (default 2 1.5)")
    p.add_argument("--granularity", action="append", default=None,
                   help="granularity the search may use (repeatable: fine, 2:4, 16x16; "
                        "default fine and 2:4)")
    p.add_argument("--strategy", choices=("netadapt", "amc"), default="netadapt",
                   help="the automatic pruning search (default %(default)s)")
    p.add_argument("--amc-episodes", type=int, default=60,
                   help="episodes of the AMC search (default %(default)s)")
    p.add_argument("--short-steps", type=int, default=20,
                   help="fine-tune steps per search candidate (default %(default)s)")
    p.add_argument("--final-epochs", type=int, default=3, help="final fine-tune epochs")
    p.add_argument("--max-iterations", type=int, default=20, help="search iterations at most")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / kernel threads (default: torch's setting, all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true",
                   help="retrain and re-measure (nothing read from or written to the cache)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a check fails (default: report only)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny configuration for a smoke test (hidden 64, 1 epoch, few steps)")


def main(args) -> int:
    """Run the default demo from parsed arguments (see :func:`add_arguments`)."""
    from .auto.measure import Grid
    if args.quick:
        args.hidden, args.epochs, args.short_steps = min(args.hidden, 64), 1, 2
        args.final_epochs, args.max_iterations = 1, 3
    torch.manual_seed(args.seed)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    print(f"sparsekern demo: MLP 64 -> {args.hidden} x{args.hidden_layers} -> 10 on "
          f"scikit-learn digits, {torch.get_num_threads()} threads; output in {args.out}")
    load = busy_note()
    if load:
        print(load)
    train, val, test = digits_data(args.seed)
    model = trained_digits_model(args.hidden, args.hidden_layers, args.epochs, args.seed, train,
                                 use_cache=not args.no_cache)
    X = test.dataset.tensors[0]
    xs = [X[:b].contiguous() for b in args.batches]
    grid = Grid(sparsities=(0.5, 0.9), blocks=((16, 16),)) if args.quick else Grid()
    timer = QUICK_TIMER if args.quick else REPORT_TIMER
    speed = _one_or_per_batch(args.target_speedup, args.batches, "--target-speedup")
    need = _one_or_per_batch(args.require_speedup, args.batches, "--require-speedup")
    result = run(model, train, val, xs, speed, test_loader=test,
                 granularities=args.granularity or ("fine", "2:4"),
                 short_steps=args.short_steps, final_epochs=args.final_epochs,
                 max_iterations=args.max_iterations, required_speedup=need,
                 settings=MeasureSettings(grid=grid), cache=False if args.no_cache else None,
                 out_dir=args.out, seed=args.seed, timer=timer,
                 windows=2 if args.quick else REPORT_WINDOWS, strategy=args.strategy,
                 amc_episodes=min(args.amc_episodes, 6) if args.quick else args.amc_episodes,
                 extra={"dataset": {"name": "sklearn digits", "train": len(train.dataset),
                                    "val": len(val.dataset), "test": len(test.dataset)},
                        "model": {"name": "DigitsMLP", "hidden": args.hidden,
                                  "hidden_layers": args.hidden_layers, "epochs": args.epochs}})
    return 1 if args.strict and not result.report["checks"]["all_ok"] else 0


def busy_note() -> str:
    """A warning when other processes already keep the CPUs busy, else ''."""
    from .bench.machine import usable_cpus
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return ""
    cpus = usable_cpus()
    if load < cpus:
        return ""
    return (f"note: this machine is busy (load average {load:.1f} on {cpus} CPUs): timings "
            f"will be noisy, multi-threaded ones most (a preempted thread stalls the others); "
            f"--threads 1 gives steadier numbers")


def _one_or_per_batch(values, batches, flag):
    if len(values) == 1:
        return values[0]
    if len(values) != len(batches):
        raise SystemExit(f"{flag}: give one value, or one per batch size ({len(batches)} for "
                         f"--batches {' '.join(map(str, batches))}); got {values}")
    return list(values)
