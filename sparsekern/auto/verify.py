"""Checking a latency table's prediction against the model it predicts, paired in time.

On a shared machine the speed of the same call drifts by tens of percent within minutes
(other tenants' use of the last-level cache, of memory bandwidth, of the cores). A table
measured earlier, or loaded from the cache, describes the machine as it was then, so
comparing its prediction with a measurement taken now mixes the table's error with the
machine's drift. :func:`paired_prediction` separates the two: in each of several windows
it times

* the dense model and the sparse model, back to back (the measured latencies: a model in
  use runs call after call and sets its own cache state),
* the table's own ingredients, re-timed: the time outside the candidate layers (a stubbed
  copy of the model, timed warm as the table times it) and, per layer, a synthetic layer
  exactly as a table entry times it (random weights of the layer's geometry pruned to the
  chosen format and stored fraction, a random input with the layer's fraction of zero
  activations), in the table's cache context, and also in its light context when the
  plan's bytes put it partly there (``LatencyTable.cold_share``).

The paired prediction of a window is the table's additive model (outside + sum of the
layers) evaluated on that window's ingredients; compared with the sparse model measured
in the same windows, it gives the table's modelling error without the machine's drift. The
table's prediction as it stands (``table.predict``) is reported beside it, with the drift
(the dense model now against the dense model the table predicts).
"""
from __future__ import annotations

import statistics
from typing import Dict, Mapping, Optional, Sequence

from torch import nn

from ..inputs import eval_mode
from ..timing.timers import TimerSettings
from .formats import DENSE
from .measure import synthetic_layer, time_jobs
from .signature import LayerSig, call, input_label
from .table import Choice, LatencyTable, stubbed_copy

#: Jobs timed back to back in every context: whole models set their own cache state, and
#: the time outside the layers works on activations the layer before it just wrote.
WHOLE = ("dense", "sparse", "other")
#: Timer of each window's measurement.
WINDOW_TIMER = TimerSettings(min_time=0.1, min_reps=10, max_reps=400, max_candidate_time=0.5)


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def paired_prediction(table: LatencyTable, dense: nn.Module, sparse: nn.Module,
                      choices: Mapping[str, Choice], example_inputs, *, windows: int = 5,
                      timer: TimerSettings = WINDOW_TIMER, context: Optional[str] = None,
                      seed: int = 0) -> Dict[str, dict]:
    """Measured and predicted latency per example input, paired window by window.

    Args:
        table: the latency table (its layers, shapes and the signatures of its entries).
        dense, sparse: the dense model and the sparse model it became (same layer names).
        choices: {layer: (format, stored fraction)} of the sparse model (missing: dense).
        example_inputs: the inputs of the table's shapes (a tensor or a list of them).
        windows: how many times the whole set is measured, the shapes taking turns.
        timer, context: timer of each window; cache context (default: the table's).

    Returns:
        {shape label: {"dense_s", "sparse_s", "predicted_s", "error", "table_predicted_s",
        "table_error", "table_dense_s", "drift", "layers_s", "other_s", "cold_share",
        "windows"}}:
        medians over windows of the dense and sparse model, of the paired prediction and of
        the per-window error (predicted / measured - 1); the table's own prediction and its
        error against the median measurement; drift = dense model now / the table's dense
        prediction - 1; per window, every timing. Entries without a signature (made by
        hand, e.g. LayerLatency.synthetic) cannot be rebuilt: their prediction is used as
        is, and their layers are listed in "not_retimed".
    """
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    xs = list(example_inputs) if isinstance(example_inputs, list) else [example_inputs]
    context = context or table.meta.get("context") or "warm"
    missing = [n for n in table.layers if _submodule(dense, n) is None]
    if missing:
        raise ValueError(f"the latency table's layers {missing} are not modules of the dense "
                         f"model {type(dense).__name__}")
    # the table's own predictions first: a plan it cannot predict fails before any timing
    table_pred, table_dense = table.predict(choices), table.predict()
    share = table.cold_share(choices)
    light = table.meta.get("light_context") if share < 1.0 else None
    device = next(dense.parameters()).device
    prepared, fixed = {}, {}
    for x in xs:
        lab = input_label(x)
        if lab not in table.shapes:
            raise ValueError(f"example input of shape {lab} is not a shape of the table "
                             f"{table.shapes}")
        prepared[lab], fixed[lab] = _jobs(table, dense, sparse, choices, x, lab, seed, share)
    with eval_mode(dense), eval_mode(sparse):  # every module's own flag comes back
        runs = _windows(prepared, windows, device, timer, context, light, share)
    return {lab: _summary(ws, fixed[lab], table_pred[lab], table_dense[lab])
            for lab, ws in runs.items()}


def _submodule(model: nn.Module, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _windows(prepared, windows: int, device, timer, context: str, light: Optional[str],
             share: float) -> Dict[str, list]:
    """{shape: [per-window timings]} of the jobs :func:`_jobs` prepared per shape."""
    runs: Dict[str, list] = {lab: [] for lab in prepared}
    for _ in range(windows):
        for lab, jobs in prepared.items():
            # whole models back to back, in alternating blocks (a model sets its own cache
            # state), layers in the table's context(s)
            whole = {k: v for k, v in jobs.items() if k in WHOLE}
            layers = {k: v for k, v in jobs.items() if k not in WHOLE}
            w = {k: v["median_s"] for k, v in time_jobs(whole, device, timer, "warm").items()}
            w.update({k: v["median_s"] for k, v in
                      time_jobs(layers, device, timer, context).items()})
            if light:
                w.update({"light:" + k[len("layer:"):]: v["median_s"]
                          for k, v in time_jobs(layers, device, timer, light).items()})
            w["share"] = share
            runs[lab].append(w)
    return runs


def _jobs(table: LatencyTable, dense, sparse, choices, x, lab: str, seed: int, share: float):
    """What one shape times per window ({name: (fn or module, input)}: the dense and sparse
    models, the dense model with its table layers stubbed out, one rebuilt layer per table
    entry) and {layer: predicted seconds} of the hand-made entries that cannot be rebuilt
    (mixed by ``share``, table.cold_share, when the table has light entries)."""
    names = list(table.layers)
    jobs = {"dense": (lambda x: call(dense, x), x), "sparse": (lambda x: call(sparse, x), x),
            "other": (lambda x, o=stubbed_copy(dense, x, names): call(o, x), x)}
    fixed = {}
    for n in names:
        entry = table.layers[n].get(lab)
        if entry is None:  # the layer does not run on this input
            continue
        fmt, density = choices.get(n, (DENSE, 1.0))
        if not entry.entry.get("signature"):
            # a hand-made entry (no layer to rebuild): its prediction, not re-timed
            fixed[n] = table.mixed_s(n, (fmt, density), share)[lab]
            continue
        layer, x_layer = synthetic_layer(LayerSig.from_key(entry.entry["signature"]), fmt,
                                         density, seed)
        jobs["layer:" + n] = (layer, x_layer)
    return jobs, fixed


def _mixed(w: dict, name: str) -> float:
    """Layer ``name``'s time in window ``w``: its table-context time, mixed with its light
    one by the window's cold share when both were timed."""
    t = w["layer:" + name]
    light = w.get("light:" + name)
    return t if light is None else w["share"] * t + (1.0 - w["share"]) * light


def _summary(ws: list, fixed: Dict[str, float], table_pred: float, table_dense: float) -> dict:
    """One shape's medians over windows (see :func:`paired_prediction`)."""
    for w in ws:
        w["predicted"] = w["other"] + sum(fixed.values()) + sum(
            _mixed(w, k[len("layer:"):]) for k in w if k.startswith("layer:"))
        w["error"] = w["predicted"] / w["sparse"] - 1.0
    sparse_s = _median([w["sparse"] for w in ws])
    dense_s = _median([w["dense"] for w in ws])
    layer_keys = [k for k in ws[0] if k.startswith("layer:")]
    predicted_s = _median([w["predicted"] for w in ws])
    return {
        "dense_s": dense_s, "sparse_s": sparse_s, "predicted_s": predicted_s,
        "error": predicted_s / sparse_s - 1.0,
        "table_predicted_s": table_pred,
        "table_error": table_pred / sparse_s - 1.0,
        "table_dense_s": table_dense,
        "drift": dense_s / table_dense - 1.0,
        "layers_s": {**{k[len("layer:"):]: _median([_mixed(w, k[len("layer:"):]) for w in ws])
                        for k in layer_keys}, **fixed},
        "cold_share": ws[0]["share"],
        "not_retimed": sorted(fixed),
        "other_s": _median([w["other"] for w in ws]),
        "windows": ws,
    }
