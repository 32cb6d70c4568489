"""The demo's report: report.json's contents, its checks, the printed summary, the plots."""
from __future__ import annotations

import json
import math
import os

from .. import prune
from ..auto.formats import DENSE
from ..auto.plots import plot_layer_latency, plot_table
from .config import SLOWER_TOLERANCE


def _ms(t) -> str:
    return "n/a" if t is None else f"{t * 1e3:.3f} ms"


def _layers(st) -> list:
    decisions = st.sparse.sparsekern_decisions
    sparsity = prune.sparsity(st.pruned_dense, list(st.table.layers))
    plans = st.search.plans
    out = []
    for n, d in decisions.items():
        W = st.pruned_dense.get_submodule(n).weight
        lat = {s: {"dense": st.per_layer[s][n]["dense"], "sparse": st.per_layer[s][n]["sparse"],
                   "predicted": d.predicted_s.get(s), "predicted_dense": d.dense_s.get(s)}
               for s in st.labels if n in st.per_layer.get(s, {})}
        out.append({"name": n, "shape": [W.shape[0], math.prod(W.shape[1:])],
                    "format": d.format, "layout": d.layout,
                    "blocksize": list(d.blocksize) if d.blocksize else None,
                    "sparsity": sparsity[n], "stored_fraction": d.density,
                    "granularity": plans[n].granularity if n in plans else None,
                    "reason": d.reason, "latency_s": lat})
    return out


def _latency(st) -> dict:
    out = {}
    for s in st.labels:
        m = st.e2e[s]
        out[s] = {"label": st.cfg.labels[st.labels.index(s)] if st.cfg.labels else s,
                  "dense_s": m["dense_s"], "sparse_s": m["sparse_s"],
                  "speedup": m["dense_s"] / m["sparse_s"],
                  "predicted_sparse_s": m["predicted_s"], "prediction_error": m["error"],
                  "table_predicted_sparse_s": m["table_predicted_s"],
                  "table_prediction_error": m["table_error"],
                  "table_predicted_dense_s": m["table_dense_s"], "drift": m["drift"],
                  "windows": m["windows"],
                  "target_speedup": st.targets[s], "required_speedup": st.required[s]}
    return out


#: The end-to-end speedup of the windows may vary by this factor (max / min) before the
#: timings count as unusable ("machine too busy to measure").
MAX_WINDOW_SPREAD = 1.5


def stability(latency: dict) -> dict:
    """{"window_speedups": {shape: [...]}, "spread": max/min over all, "too_busy": bool,
    "judged": bool}: with one window per shape the spread is 1 by construction, so the load
    is not judged (judged False) rather than reported quiet."""
    ws = {s: [w["dense"] / w["sparse"] for w in x["windows"]] for s, x in latency.items()}
    spread = max((max(v) / min(v) for v in ws.values() if v), default=1.0)
    return {"window_speedups": ws, "spread": spread, "max_spread": MAX_WINDOW_SPREAD,
            "too_busy": spread > MAX_WINDOW_SPREAD,
            "judged": any(len(v) >= 2 for v in ws.values())}


def not_slower(lat: dict, converted: int) -> dict:
    """The check that layout='auto' left the model no slower than dense at one shape.

    Slower means slower beyond SLOWER_TOLERANCE in *every* window: dense and sparse are timed
    in alternation in each window, so a median below the allowance while some window is not
    is a difference within the run's own spread, not a measurement to take as true (CI: one
    csc layer of 36, a few hundredths of a ms, read as 0.94x from three windows).
    """
    ws = [w["dense"] / w["sparse"] for w in lat.get("windows", [])]
    floor = 1.0 - SLOWER_TOLERANCE
    best = max(ws) if ws else lat["speedup"]
    return {"speedup": lat["speedup"], "tolerance": SLOWER_TOLERANCE,
            "layers_converted": converted, "window_speedups": ws,
            # no layer converted: the model *is* the dense model
            "ok": not converted or lat["speedup"] >= floor or best >= floor}


def speedup_check(lat: dict, required: float, converted: int) -> dict:
    """The check that the measured speedup at one shape meets ``required``. With no layer
    converted the sparse model *is* the dense model: its speedup is 1x whatever the timings'
    noise says ("applicable": False; it passes only when ``required`` <= 1)."""
    measured = lat["speedup"]
    return {"required": required, "measured": measured, "layers_converted": converted,
            "applicable": bool(converted),
            "ok": (measured if converted else 1.0) >= required}


def checks(st, latency: dict, converted: int) -> dict:
    """Every check: speedups, the task's quality checks, layout='auto' not slower than
    dense, the table's prediction; "all_ok" when every one passes."""
    cfg = st.cfg
    out = {
        "speedup": {s: speedup_check(latency[s], st.required[s], converted) for s in st.labels},
        "quality": st.task.checks(st.dense_quality, st.quality, cfg),
        "auto_not_slower": {s: not_slower(latency[s], converted) for s in st.labels},
        "prediction": {s: {"max_error": cfg.max_prediction_error,
                           "error": latency[s]["prediction_error"],
                           "ok": abs(latency[s]["prediction_error"]) <= cfg.max_prediction_error}
                       for s in st.labels},
    }
    out["all_ok"] = all(v["ok"] for group in out.values() for v in group.values())
    out["measurement"] = stability(latency)
    return out


def episode_number(index: int) -> int:
    """An AMC episode's number in the console and in report.json: its 0-based index in the
    search's history plus 1 (as the search's ``reason`` and NetAdapt's iterations count)."""
    return index + 1


def search_report(search) -> dict:
    """report.json's "search": ``search.to_dict()`` (a NetAdaptResult or AMCResult), with an
    AMC search's ``history[i]["episode"]`` and ``best_episode`` given as episode numbers
    (:func:`episode_number`, from 1, as printed) and ``"episodes_from": 1`` saying so. The
    result itself is left unchanged (its fields stay 0-based indices into ``history``)."""
    d = search.to_dict()
    if "best_episode" not in d:  # NetAdapt: its iterations are numbered from 1 already
        return d
    d["history"] = [{**h, "episode": episode_number(h["episode"])} for h in d["history"]]
    if d["best_episode"] is not None:
        d["best_episode"] = episode_number(d["best_episode"])
    d["episodes_from"] = 1
    return d


def build_report(st) -> dict:
    from .._version import __version__
    layers, latency = _layers(st), _latency(st)
    converted = sum(1 for L in layers if L["format"] != DENSE)
    report = {
        "sparsekern_version": __version__,
        "machine": st.table.meta.get("machine"), "software": st.table.meta.get("software"),
        "shapes": st.labels, "shape_labels": list(st.cfg.labels or st.labels),
        "task": st.task.kind,
        "quality": {"dense": st.dense_quality, "pruned": st.quality,
                    "metric": st.task.metric_name,
                    "validation_dense": st.search.metric_dense,
                    "validation_after_search": st.search.metric_search,
                    "validation_final": st.search.metric_final},
        "recovery_loss": st.recovery_curve, "reprune": st.reprune, "recovery": st.recovery,
        "relaxed_search": st.relaxed,
        "layers": layers, "latency": latency,
        "checks": checks(st, latency, converted),
        "search": search_report(st.search),
        "sensitivity": {"ratios": st.sens.ratios, "baseline": st.sens.baseline,
                        "curves": st.sens.curves, "granularity": st.sens.granularity,
                        "criterion": st.sens.criterion},
        "config": {**st.cfg.summary(),
                   "target_speedup": st.targets, "required_speedup": st.required},
        "timings_s": dict(st.clock), "latency_table_cache": st.table.meta.get("cache"),
        "cache_context": st.table.meta.get("context") or "warm",
        "load_average": _loadavg(),
    }
    if "accuracy" in st.dense_quality:  # the classification report's historic field
        report["accuracy"] = {"dense": st.dense_quality["accuracy"],
                              "pruned": st.quality["accuracy"],
                              "drop": st.dense_quality["accuracy"] - st.quality["accuracy"]}
    if st.cfg.extra:
        report.update(st.cfg.extra)
    return report


def distinct_layers(table) -> list:
    """The first layer of each distinct set of entries (a BERT's 36 layers have 3 shapes):
    the table plot shows each measurement once."""
    seen, out = set(), []
    for n, per in table.layers.items():
        key = json.dumps({s: e.entry.get("signature") or e.entry for s, e in per.items()},
                         sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def write_outputs(st, report: dict, plots: bool = True) -> None:
    """report.json, and (``plots``) the PNGs and the sparse model, into cfg.out_dir."""
    out = st.cfg.out_dir
    files = {"latency_table": os.path.join(out, "latency_table.json"),
             "model": os.path.join(out, "model.sparse.pt"),
             "report": os.path.join(out, "report.json")}
    if plots:
        report["plots"] = {
            "sensitivity": os.path.join(out, "sensitivity.png"),
            "latency_table": plot_table(st.table, os.path.join(out, "latency_table.png"),
                                        layers=distinct_layers(st.table))}
        if any(st.per_layer.values()):
            report["plots"]["layer_latency"] = plot_layer_latency(
                st.per_layer, {L["name"]: L["format"] for L in report["layers"]},
                os.path.join(out, "layer_latency.png"))
        prune.save_sparse(st.sparse, files["model"])
    report["files"] = files
    with open(files["report"], "w") as f:
        json.dump(report, f, indent=1, default=float)


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def short_name(name: str) -> str:
    """A layer name for a table column (a BERT's long prefix dropped)."""
    return name.replace("encoder.encoder.layer.", "").replace("encoder.layer.", "")


def _layer_lines(r: dict, print_fn) -> None:
    shapes, names = r["shapes"], r["shape_labels"]
    print_fn("layers:")
    print_fn(f"  {'layer':<28} {'shape':>9} {'format':>9} {'sparsity':>8}  " + "  ".join(
        f"{'dense/sparse ms, ' + lab:>26}" for lab in names))
    for L in r["layers"]:
        lat = "  ".join(
            f"{L['latency_s'][s]['dense'] * 1e3:>12.3f} /{L['latency_s'][s]['sparse'] * 1e3:>11.3f}"
            if s in L["latency_s"] else f"{'-':>26}" for s in shapes)
        print_fn(f"  {short_name(L['name']):<28} {'x'.join(map(str, L['shape'])):>9} {L['format']:>9} "
                 f"{L['sparsity']:>8.1%}  {lat}")
    reasons = {}
    for L in r["layers"]:
        if L["format"] == DENSE:
            reasons.setdefault(L["reason"], []).append(L["name"])
    for why, ns in reasons.items():
        who = short_name(ns[0]) if len(ns) == 1 else f"{len(ns)} layers ({short_name(ns[0])}, ...)"
        print_fn(f"  {who} stay dense: {why}")


def print_summary(r: dict, print_fn, task) -> None:
    print_fn("")
    print_fn(task.describe(r["quality"]["dense"], r["quality"]["pruned"]))
    _layer_lines(r, print_fn)
    n_win = len(next(iter(r["latency"].values()))["windows"]) if r["latency"] else 0
    print_fn(f"end to end (median of {n_win} windows; the prediction is the latency table's "
             f"sum of layers, its entries re-timed in the same windows):")
    for s in r["shapes"]:
        x = r["latency"][s]
        print_fn(f"  {x['label']}: dense {_ms(x['dense_s'])}, sparse {_ms(x['sparse_s'])}, "
                 f"speedup {x['speedup']:.2f}x (required {x['required_speedup']:g}x); predicted "
                 f"{_ms(x['predicted_sparse_s'])} ({100 * x['prediction_error']:+.1f}% vs "
                 f"measured)")
        print_fn(f"    the table as the search used it predicted "
                 f"{_ms(x['table_predicted_sparse_s'])} ({100 * x['table_prediction_error']:+.1f}%);"
                 f" the dense model runs {100 * x['drift']:+.1f}% against its prediction "
                 f"(its layers timed in the table, earlier and one at a time: drift, load, "
                 f"or what the layers cost together)")
    print_checks(r, print_fn)
    # Every file the run wrote (the sparse model and the latency table too, where they exist).
    written = [f for f in r["files"].values() if os.path.exists(f)]
    plots = list(r.get("plots", {}).values())
    print_fn("wrote " + ", ".join(written) + ("; plots: " + ", ".join(plots) if plots else ""))
    t = r["timings_s"]
    print_fn("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if k != "total")
             + f"; total {t['total']:.1f} s")


def print_checks(r: dict, print_fn) -> None:
    c, lab = r["checks"], {s: r["latency"][s]["label"] for s in r["shapes"]}
    ok = lambda b: "OK  " if b else "FAIL"  # noqa: E731
    print_fn("checks:")
    m = c["measurement"]
    if m["too_busy"]:
        print_fn(f"  [BUSY] machine too busy to measure: the speedup varied {m['spread']:.2f}x "
                 f"between the measurement windows (at most {m['max_spread']:g}x is usable); "
                 f"the latency checks below are not meaningful: rerun on a quieter machine "
                 f"or with fewer --threads")
    elif not m.get("judged", True):
        print_fn("  [NOTE] one measurement window: whether the machine was too busy to "
                 "measure cannot be judged (it takes windows >= 2)")
    for s, v in c["speedup"].items():
        text = (f"{v['measured']:.2f}x >= {v['required']:g}x" if v.get("applicable", True)
                else f"not applicable: no layer converted (the sparse model is the dense "
                     f"model, 1x); required {v['required']:g}x")
        print_fn(f"  [{ok(v['ok'])}] speedup at {lab[s]}: {text}")
    for v in c["quality"].values():
        print_fn(f"  [{ok(v['ok'])}] {v['text']}")
    for s, v in c["auto_not_slower"].items():
        ws = v.get("window_speedups") or []
        span = f"; windows {min(ws):.2f}-{max(ws):.2f}x" if ws else ""
        why = (f"{v['speedup']:.2f}x{span}; {v['tolerance']:.0%} noise allowance, slower only "
               f"when every window is" if v["layers_converted"] else
               "no layer converted: it is the dense model")
        print_fn(f"  [{ok(v['ok'])}] layout='auto' not slower than dense at {lab[s]} ({why})")
    for s, v in c["prediction"].items():
        print_fn(f"  [{ok(v['ok'])}] predicted latency within {v['max_error']:.0%} of measured "
                 f"at {lab[s]} ({100 * v['error']:+.1f}%)")
