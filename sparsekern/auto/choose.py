"""Per layer, the fastest format for the weight's actual zeros, or dense when none is faster.

The decision reads the latency table: for each format the weight's pattern allows (2:4
only when it is 2:4; BSR at its block density; CSC at its nonzero density) the predicted
time at every shape of the table, as a ratio to dense's time that is never below the
stored fraction (a format reading that fraction of the entries cannot skip more of dense's
work; a smaller measured ratio means dense's timing was slowed by other load); a format
storing the whole matrix is never a candidate. A format is eligible only when it is
predicted at least ``margin`` faster than the dense layer at *every* shape, so "auto" never
picks a format that the measurements say is slower than dense; among eligible formats the
one with the smallest mean (predicted / dense) time wins.

A prediction that rests on a point whose timing stayed unstable (sparsekern.auto.measure:
status "unstable") is the bytes-bound model's, not a measurement: the decision's reason
says so, and :func:`sparsify_auto` lists such predictions, with the entries it measured,
re-checked or was given, in ``model.sparsekern_entries``.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .._warn import user_stacklevel
from .. import _layers
from ..conv import SparseConv2d
from ..nn import SparseLinear, hooks_detached, replace_layer
from . import recheck
from .formats import DENSE, FormatSpec, parse_format
from .patterns import pattern_densities
from .signature import LayerSig, candidate_layers, capture
from .table import LatencyTable, LayerLatency, build_table, layer_table

log = logging.getLogger("sparsekern")

#: A format must be predicted at least this fraction faster than dense at every shape
#: (timings on a shared machine wobble by a few percent).
DEFAULT_MARGIN = 0.05


def _ms(t: float) -> str:
    return f"{t * 1e3:.3g} ms"


@dataclass
class LayerDecision:
    """The format of one layer and why (times in seconds, per shape label)."""

    name: str
    format: str
    densities: Dict[str, Optional[float]]
    predicted_s: Dict[str, float]
    dense_s: Dict[str, float]
    reason: str
    others: Dict[str, Dict[str, Optional[float]]] = field(default_factory=dict)
    #: {format: [shape labels]} where that format's prediction came from the bytes-bound
    #: model (its timing was unstable), not from a measurement; {"dense": [...]} where
    #: dense's own timing stayed unstable (its fastest sample stood in).
    from_model: Dict[str, list] = field(default_factory=dict)

    @property
    def spec(self) -> Optional[FormatSpec]:
        return None if self.format == DENSE else parse_format(self.format)

    @property
    def layout(self) -> Optional[str]:
        return None if self.format == DENSE else self.spec.layout

    @property
    def blocksize(self) -> Optional[Tuple[int, int]]:
        return None if self.format == DENSE else self.spec.blocksize

    @property
    def density(self) -> float:
        return 1.0 if self.format == DENSE else float(self.densities[self.format])

    def to_dict(self) -> dict:
        return {"name": self.name, "format": self.format, "layout": self.layout,
                "blocksize": list(self.blocksize) if self.blocksize else None,
                "densities": self.densities, "predicted_s": self.predicted_s,
                "dense_s": self.dense_s, "reason": self.reason,
                "ratio_to_dense": self.others, "from_model": self.from_model}


def decide(name: str, entries: Mapping[str, LayerLatency],
           densities: Mapping[str, Optional[float]], margin: float = DEFAULT_MARGIN
           ) -> LayerDecision:
    """Choose among ``densities`` {format: stored fraction, None = pattern does not fit}.

    ``entries``: {shape label: LayerLatency} of the layer.
    """
    if not entries:
        raise ValueError(f"layer {name!r} has no latency entry")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    dense = {lab: e.dense_s for lab, e in entries.items()}
    # shapes where dense's own time stayed unstable: every ratio there rests on its stand-in
    unsettled = [lab for lab, e in entries.items() if not e.dense_stable]
    dense_note = _dense_note(entries, unsettled)
    if all(d is None or d >= 1.0 for d in densities.values()):
        # Every format would store the whole matrix: nothing to skip.
        return LayerDecision(name, DENSE, dict(densities), dict(dense), dense,
                             "the weight has no zeros" if any(d is not None for d in
                                                              densities.values())
                             else "the zeros fit no format of the latency table")
    ratios: Dict[str, Dict[str, Optional[float]]] = {}
    modeled: Dict[str, list] = {}
    untimed: Dict[str, str] = {}
    capped: Dict[str, list] = {}
    best: Optional[Tuple[float, str, Dict[str, float]]] = None
    closest: Optional[Tuple[float, str, str]] = None  # (worst ratio, format, shape)
    for fmt, d in densities.items():
        if d is None or d >= 1.0:
            continue  # storing the whole matrix skips nothing: never faster than dense
        preds = {lab: e.predict(fmt, d) for lab, e in entries.items()}
        if any(t is None for t in preds.values()):
            lab = next(l for l, t in preds.items() if t is None)
            untimed[fmt] = entries[lab].untimed_reason(fmt)
            continue
        floors = {lab: e.floor_s(fmt, d) for lab, e in entries.items()}
        low = [lab for lab in preds if preds[lab] < floors[lab]]
        if low:
            capped[fmt] = low
            preds = {lab: max(t, floors[lab]) for lab, t in preds.items()}
        r = {lab: preds[lab] / dense[lab] for lab in preds}
        ratios[fmt] = r
        labs = [lab for lab, e in entries.items() if e.from_model(fmt, d)]
        if labs:
            modeled[fmt] = labs
        worst_lab = max(r, key=r.get)
        if closest is None or r[worst_lab] < closest[0]:
            closest = (r[worst_lab], fmt, worst_lab)
        if r[worst_lab] <= 1.0 - margin:
            score = sum(r.values()) / len(r)
            if best is None or score < best[0]:
                best = (score, fmt, preds)
    shapes = ", ".join(entries)
    if unsettled:
        modeled[DENSE] = unsettled
    if best is not None:
        _, fmt, preds = best
        speed = "; ".join(f"{_ms(preds[l])} vs dense {_ms(dense[l])} at {_at(entries, l)}"
                          for l in preds)
        reason = f"{fmt} stores {densities[fmt]:.1%}: predicted {speed}" + _model_note(
            modeled.get(fmt)) + _cap_note(capped.get(fmt)) + dense_note
        return LayerDecision(name, fmt, dict(densities), preds, dense, reason, ratios, modeled)
    if closest is not None:
        ratio, fmt, lab = closest
        reason = (f"no sparse format is predicted faster than dense at every shape ({shapes}): "
                  f"the best, {fmt} storing {densities[fmt]:.1%}, takes {ratio:.2f}x the dense "
                  f"time at {_at(entries, lab)}")
        if ratio <= 1.0:
            reason += f" (a format must be at least {margin:.0%} faster)"
        reason += _model_note(modeled.get(fmt)) + _cap_note(capped.get(fmt)) + dense_note
    elif untimed:
        reason = ("no format that fits the zeros has a usable timing here: " +
                  "; ".join(f"{fmt}: {why}" for fmt, why in untimed.items()))
    else:
        reason = "the zeros fit no format of the latency table"
    return LayerDecision(name, DENSE, dict(densities), dict(dense), dense, reason, ratios,
                         modeled)


def _at(entries: Mapping[str, LayerLatency], lab: str) -> str:
    """``lab`` (the model's input, the table's shape label) and the layer's own input there,
    e.g. "{'input_ids': [1, 16]} (layer input [16, 384])"; the label alone for an entry
    without a signature (a hand-made one)."""
    sig = entries[lab].entry.get("signature")
    if not sig:
        return str(lab)
    try:
        shape = list(LayerSig.from_key(sig).input_shape)
    except (KeyError, TypeError, ValueError):
        return str(lab)
    return str(lab) if str(shape) == str(lab) else f"{lab} (layer input {shape})"


def _cap_note(labels) -> str:
    if not labels:
        return ""
    return (f" [capped at the stored fraction at {', '.join(labels)}: the measured speedup "
            f"there exceeded the work the format skips, so dense's timing was slowed]")


def _dense_note(entries: Mapping[str, LayerLatency], labels: Sequence[str]) -> str:
    """Says where (``labels``) dense's own time stayed unstable (its fastest sample stands
    in)."""
    if not labels:
        return ""
    return " [dense timing unstable at " + "; ".join(
        f"{lab}: {entries[lab].dense_why or 'unstable'}" for lab in labels) + "]"


def _model_note(labels) -> str:
    if not labels:
        return ""
    return (f" [bytes-bound model prediction at {', '.join(labels)}: the timing there stayed "
            f"unstable, so it was not measured]")


def decide_weight(name: str, W: torch.Tensor, entries: Mapping[str, LayerLatency],
                  formats: Sequence[str], margin: float = DEFAULT_MARGIN) -> LayerDecision:
    """:func:`decide` for the actual zeros of the weight matrix W [M, K]."""
    specs = [parse_format(f) for f in formats]
    return decide(name, entries, pattern_densities(W, specs), margin)


def _has_zeros(mod: nn.Module) -> bool:
    """Whether the layer's weight holds at least one zero (NaN is not a zero)."""
    return bool((_layers.weight_matrix(mod).detach() == 0).any())


def _sparse_layer(mod: nn.Module, d: LayerDecision) -> nn.Module:
    if isinstance(mod, nn.Conv2d):
        return SparseConv2d.from_dense(mod, d.layout, d.blocksize)
    return SparseLinear.from_dense(mod, d.layout, d.blocksize)


def sparsify_auto(model: nn.Module, table: Optional[LatencyTable] = None, example_input=None,
                  layers=None, linear_only: bool = False, margin: float = DEFAULT_MARGIN,
                  settings=None, cache=None, progress: bool = False,
                  check_model: bool = True) -> nn.Module:
    """Swap each candidate layer for its fastest format, or keep it dense (in place).

    Args:
        model: a model whose pruned weights hold their zeros.
        table: a LatencyTable of this model (sparsekern.auto.build_table); layers it lacks
            are measured. None: measured now (cached on disk) on ``example_input``, or,
            without one, each nn.Linear alone on a batch-1 input [1, in_features].
        example_input: a tensor (or tuple of model arguments), or a list of them.
        layers: names of the layers to consider (default every nn.Linear / nn.Conv2d
            with groups=1; only nn.Linear with ``linear_only``).
        margin: a format must be predicted this fraction faster than dense at every shape.
        check_model: with ``example_input``, settle the table's close calls on the whole
            model (:mod:`sparsekern.auto.recheck`): the layers kept dense though their best
            format was predicted within 2x of dense are tried packed, then the layers packed
            for a predicted gain under 20% are tried dense, each trial kept only when the
            model runs at least ``margin`` faster at every example input. What it did:
            ``model.sparsekern_model_check`` {"skipped": why or None, "trials": [...]}, and
            the reasons of the layers it changed.
    Returns the model (or the new layer when the model itself is one layer). Decisions:
    ``model.sparsekern_report`` {name: (layout or "dense", reason)} and
    ``model.sparsekern_decisions`` {name: LayerDecision}; layers kept dense are logged
    (logger "sparsekern") with the reason. Where the numbers came from:
    ``model.sparsekern_entries`` (see :func:`entries_report`), logged in one line, with
    "busy": ["layer @ shape", ...] the entries measured on a busy machine (their layers'
    reasons say so, with one RuntimeWarning per call: :func:`busy_entries`).
    """
    mods = candidate_layers(model, layers)
    if linear_only:
        mods = {n: m for n, m in mods.items() if _layers.is_linear(m)}
    # a weight without a single zero stays dense in every format: not timed (when this call
    # measures the table; a given table's entries are read as they are)
    untimed = {} if table is not None else {n: m for n, m in mods.items() if not _has_zeros(m)}
    timed = [n for n in mods if n not in untimed]
    if table is None and example_input is not None and timed:
        table = build_table(model, example_input, layers=timed, settings=settings,
                            cache=cache, measure_whole_model=False, progress=progress)
    elif table is None and example_input is not None and mods:
        for x in example_input if isinstance(example_input, list) else [example_input]:
            capture(model, x, list(mods))  # nothing to time: a bad example input still raises
    if table is not None:
        table.check_fits(model, [n for n in mods if n in table.layers])
    entries = {} if table is None else {n: table.layers[n] for n in mods if n in table.layers}
    missing = {n: m for n, m in mods.items() if n not in entries and n not in untimed}
    if missing:
        convs = [n for n, m in missing.items() if not _layers.is_linear(m)]
        if convs:
            raise ValueError(f"Conv2d layers {convs} have no latency entry: pass example_input "
                             f"(or a table measured with one) to time them")
        extra = layer_table(missing, {n: (1, _layers.in_features(m)) for n, m in missing.items()},
                            settings=settings, cache=cache, progress=progress)
        entries.update(extra.layers)
    formats = list(dict.fromkeys(f for per in entries.values() for e in per.values()
                                 for f in e.entry["formats"]))
    busy = busy_entries(entries, table)
    _warn_busy(busy)
    report: Dict[str, Tuple[str, str]] = {}
    decisions: Dict[str, LayerDecision] = {}
    result = model
    for name, mod in mods.items():
        if name in untimed:
            d = LayerDecision(name, DENSE, {}, {}, {}, "the weight has no zeros (not timed)")
            decisions[name] = d
            report[name] = ("dense", d.reason)
            log.info("sparsify auto: %s stays dense (%s)", name or type(mod).__name__, d.reason)
            continue
        W = _layers.weight_matrix(mod).detach()  # [out, K] (a Conv1D's weight transposed)
        d = decide_weight(name, W, entries[name], formats, margin)
        d.reason += _busy_note(busy.get(name, {}))
        decisions[name] = d
        if d.format == DENSE:
            report[name] = ("dense", d.reason)
            log.info("sparsify auto: %s stays dense (%s)", name or type(mod).__name__, d.reason)
            continue
        why = d.reason if d.blocksize is None else f"blocksize {d.blocksize}; {d.reason}"
        report[name] = (d.layout, why)
        log.info("sparsify auto: %s -> %s (%s)", name or type(mod).__name__, d.format, d.reason)
        result = replace_layer(model, name, _sparse_layer(mod, d))  # train flag and hooks
    check = {"skipped": "no example_input" if example_input is None else
             "the model is itself the layer" if "" in mods else None, "trials": []}
    if check_model and check["skipped"] is None:
        check = _check_close_calls(result, mods, decisions, report, example_input, margin)
    elif not check_model:
        check["skipped"] = "check_model=False"
    result.sparsekern_report = report
    result.sparsekern_decisions = decisions
    result.sparsekern_model_check = check
    result.sparsekern_entries = entries_report(entries, decisions)
    result.sparsekern_entries["busy"] = [f"{n or '<model>'} @ {lab}"
                                         for n, per in busy.items() for lab in per]
    log.info("sparsify auto: latency entries %s", "; ".join(
        f"{k}: {len(v)}" for k, v in result.sparsekern_entries.items() if v) or "none")
    return result


def _check_close_calls(model: nn.Module, mods: Mapping[str, nn.Module],
                       decisions: Dict[str, LayerDecision], report: Dict[str, Tuple[str, str]],
                       example_input, margin: float) -> dict:
    """sparsify_auto's whole-model check (sparsekern.auto.recheck): updates ``model``,
    ``decisions`` and ``report`` for every adopted trial; returns what it did."""
    from .table import machine_busy
    xs = list(example_input) if isinstance(example_input, list) else [example_input]
    out: dict = {"skipped": None, "trials": []}
    pack = recheck.close_dense(decisions)
    if not pack and not recheck.close_packed(decisions):
        out["skipped"] = "no close call"
        return out
    busy = machine_busy()
    with hooks_detached(_candidates(model, mods)):
        call_s = None if busy else recheck.one_call_s(model, xs)
    if busy or call_s > recheck.MAX_CALL_S:
        out["skipped"] = (f"the machine is busy ({busy})" if busy else
                          f"one call of the model takes {call_s:.2f} s (the check runs it "
                          f"~{2 * recheck.ROUNDS + 2} times per example input)")
        log.info("sparsify auto: whole-model check of the close calls skipped: %s",
                 out["skipped"])
        return out
    avail = recheck.available_bytes()
    need = recheck.pack_bytes(mods, pack, decisions) if pack else 0
    if pack and avail is not None and need > recheck.MAX_MEMORY_SHARE * avail:
        out.setdefault("notes", []).append(
            f"pack trial of {len(pack)} layers skipped: their packed copies would take "
            f"~{need / 2**20:.0f} MiB of the {avail / 2**20:.0f} MiB available")
        pack = {}
    if pack:
        plan_a = {n: model.get_submodule(n) for n in pack}
        plan_b = {n: _sparse_layer(mods[n], recheck.flipped(decisions[n], f, ""))
                  for n, f in pack.items()}
        _trial(model, recheck.Trial("pack", dict(pack)), plan_a, plan_b, xs, margin,
               decisions, report, out, _candidates(model, mods))
    packed_now = {n for t in out["trials"] if t["adopted"] for n in t["layers"]}
    unpack = [n for n in recheck.close_packed(decisions) if n not in packed_now]
    if unpack:
        plan_a = {n: model.get_submodule(n) for n in unpack}
        plan_b = {n: mods[n] for n in unpack}
        _trial(model, recheck.Trial("unpack", {n: DENSE for n in unpack}), plan_a, plan_b, xs,
               margin, decisions, report, out, _candidates(model, mods))
    return out


def _candidates(model: nn.Module, mods: Mapping[str, nn.Module]) -> List[nn.Module]:
    """Every candidate layer, as sparsify found it and as it is in the model now (the check
    runs none of their hooks)."""
    return [*mods.values(), *(model.get_submodule(n) for n in mods)]


def _trial(model, trial: "recheck.Trial", plan_a, plan_b, xs, margin: float,
           decisions: Dict[str, LayerDecision], report: Dict[str, Tuple[str, str]],
           out: dict, quiet) -> None:
    """Runs one trial and, when it wins on a machine still quiet, adopts it."""
    from .table import machine_busy
    recheck.run_trial(model, trial, plan_a, plan_b, xs, margin, quiet=quiet)
    busy = machine_busy() if trial.adopted else None
    if busy:
        trial.adopted = False
        out.setdefault("notes", []).append(f"{trial.kind} trial not adopted: the machine "
                                           f"became busy ({busy})")
    out["trials"].append(trial.to_dict())
    meds = ", ".join(f"{sorted(r)[len(r) // 2]:.2f}x" for r in trial.ratios.values())
    log.info("sparsify auto: whole-model %s trial of %d layers: the model ran %s the table's "
             "plan (median of %d rounds per example input): %s", trial.kind,
             len(trial.layers), meds, recheck.ROUNDS, "adopted" if trial.adopted else "kept")
    if not trial.adopted:
        return
    recheck.adopt(model, plan_b, originals=trial.kind == "unpack")
    for name, fmt in trial.layers.items():
        d = decisions[name]
        was = d.format
        note = (f" [whole-model check: with the {len(trial.layers)} close call"
                f"{'s' if len(trial.layers) > 1 else ''} "
                f"{'packed' if fmt != DENSE else 'unpacked'} (this layer {was} -> {fmt}) the "
                f"model ran {meds} the table's plan, median of {recheck.ROUNDS} alternating "
                f"rounds per example input; the table's per-layer timing misjudged them]")
        decisions[name] = recheck.flipped(d, fmt, note)
        nd = decisions[name]
        report[name] = ("dense", nd.reason) if fmt == DENSE else (
            nd.layout, nd.reason if nd.blocksize is None
            else f"blocksize {nd.blocksize}; {nd.reason}")


def busy_entries(entries: Mapping[str, Mapping[str, LayerLatency]],
                 table: Optional[LatencyTable]) -> Dict[str, Dict[str, str]]:
    """{layer: {shape: why}} of the entries measured on a busy machine: those whose own
    "load" says so, and, of a ``table`` whose meta says it is busy, those that do not say
    (a table saved before entries recorded it)."""
    table_busy = table is not None and table.busy is True
    why = str((table.meta.get("load") or {}).get("why") or "") if table_busy else ""
    out: Dict[str, Dict[str, str]] = {}
    for name, per in entries.items():
        for label, e in per.items():
            if e.busy or (e.busy is None and table_busy and
                          table.layers.get(name, {}).get(label) is e):
                out.setdefault(name, {})[label] = e.busy_why or why
    return out


def _busy_note(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return (" [timed on a busy machine at " + "; ".join(
        f"{lab}{': ' + why if why else ''}" for lab, why in labels.items()) +
        ": a quiet run may choose otherwise]")


def _warn_busy(busy: Mapping[str, Mapping[str, str]]) -> None:
    """One RuntimeWarning when a choice rests on entries timed under load: their times, and
    so the choice, may not hold on a quiet machine (logged at INFO too: a WARNING record
    would print the same text a second time where logging is not configured)."""
    where = [f"{n or '<model>'} @ {lab}" for n, per in busy.items() for lab in per]
    if not where:
        return
    whys = list(dict.fromkeys(w for per in busy.values() for w in per.values() if w))
    more = len(whys) - 1
    seen = (whys[0] + (f"; and {more} other reading{'s' if more > 1 else ''}" if more else "")
            if whys else "the table says so")
    msg = (f"sparsify auto: the latency table was measured on a busy machine ({seen}) for "
           f"{len(where)} entries ({', '.join(where[:4])}{', ...' if len(where) > 4 else ''}): "
           f"the choice rests on times taken under load; measure the table again on a quiet "
           f"machine")
    log.info(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=user_stacklevel())


def entries_report(entries: Mapping[str, Mapping[str, LayerLatency]],
                   decisions: Mapping[str, LayerDecision]) -> Dict[str, list]:
    """Where a choice's numbers came from: {"measured", "re-checked", "re-measured",
    "cached", "given": ["layer @ shape", ...] (by LayerLatency.provenance),
    "predicted": ["layer @ shape: format", ...] (the decision's format, or the closest
    one of a layer kept dense, rested on the bytes-bound model there; "dense" where dense's
    own timing stayed unstable and its fastest sample stood in)}."""
    out: Dict[str, list] = {k: [] for k in ("measured", "re-checked", "re-measured", "cached",
                                            "given", "predicted")}
    for name, per in entries.items():
        for label, e in per.items():
            out.setdefault(e.provenance, []).append(f"{name or '<model>'} @ {label}")
    for name, d in decisions.items():
        for fmt, labels in d.from_model.items():
            if fmt in (d.format, DENSE) or d.format == DENSE:
                out["predicted"] += [f"{name or '<model>'} @ {lab}: {fmt}" for lab in labels]
    return out


def decide_matrix(W: torch.Tensor, blocksize=None, margin: float = DEFAULT_MARGIN,
                  settings=None, cache=None) -> LayerDecision:
    """The format of a weight matrix W [M, K] seen as an nn.Linear called at batch 1.

    For callers that know only the weight (``choose_layout(W, "auto")``): the entry is
    measured (or read from the cache) for a Linear [M, K] on an input [1, K]; BSR is
    considered with ``blocksize`` only (default (32, 32)), the block shape a caller packs.
    """
    from .formats import default_blocks
    from .measure import Grid, MeasureSettings
    from .signature import LayerSig
    from .table import default_cache, layer_entry
    M, K = W.shape
    bs = (32, 32) if blocksize is None else tuple(int(b) for b in blocksize)
    if settings is None:
        blocks = default_blocks()
        settings = MeasureSettings(grid=Grid(blocks=None if bs in blocks else blocks + (bs,)))
    sig = LayerSig("linear", M, K, False, (1, K), str(W.dtype).replace("torch.", ""),
                   str(W.device))
    entry = layer_entry(sig, settings, default_cache(cache))
    formats = [f for f in entry.entry["formats"]  # a blocked format only at blocksize
               if parse_format(f).blocksize in (None, bs)]
    return decide_weight("", W, {f"[1, {K}]": entry}, formats, margin)


def synthetic_table(layers: Mapping[str, Tuple[float, Mapping[str, Sequence[Tuple[float, float]]]]],
                    shape: str = "layer input") -> LatencyTable:
    """A LatencyTable from given numbers (tests, or timings measured elsewhere).

    ``layers``: {layer name: (dense seconds, {format: [(stored fraction, seconds), ...]})}.
    """
    return LatencyTable([shape], {n: {shape: LayerLatency.synthetic(d, curves)}
                                  for n, (d, curves) in layers.items()},
                        {shape: 0.0}, {shape: None}, {"synthetic": True})
