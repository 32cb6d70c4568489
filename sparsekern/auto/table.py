"""The latency table: per layer and input shape, the dense time and each format's time
as a function of the stored fraction, plus the time a model spends outside those layers.

Predicted model latency = (time outside the candidate layers) + the sum over candidate
layers of the predicted time of each layer's format at its stored fraction (NetAdapt's
layer-wise look-up table). Layer entries are measured once per signature and cached on
disk (sparsekern.auto.cache), keyed by machine, CPU kernel path in force (ISA, pool,
scatter), software build, signature (shapes, dtype, device) and the measured grid. An entry
read from the cache is validated first (:func:`entry_problem`): a damaged or hand-edited
one is a miss, with a warning naming its file. A cached entry is reused only after a cheap
re-check: a few of its points are re-timed, paired with dense, and their time over dense's
(what a choice reads) must agree with the cached one within ``MeasureSettings.recheck_tolerance`` (25%); otherwise the entry
is measured again; an entry with unstable points is never stored. Each entry says where
it came from (``LayerLatency.provenance``: "measured", "re-checked", "re-measured",
"cached" (reused without a re-check: ``recheck=0``) or "given") and the table's
``meta["entries"]`` lists them. Each measured entry also records what the load check saw
while it was measured (``entry["load"]``); one measured on a busy machine serves the call
but is never cached, and the table says so (``meta["busy"]``, ``meta["load"]``), also once
saved and loaded, so that a choice made from it can say so too.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..inputs import eval_mode
from ..timing.load import OTHERS_CPU_LIMIT, OthersMeter, detect_load
from ..timing.machine import is_thread_count, last_level_cache_bytes
from ..timing.timers import TimerSettings
from .cache import DiskCache
from .fingerprint import machine_key, software_key
from .formats import DENSE, parse_format
from .measure import (RATIO_SLACK, MeasureSettings, cold_share, geometry,  # noqa: F401
                      measure_signatures, module_bytes, ratio_agrees, recheck_entry,
                      streamed_bytes, time_modules)
from .signature import (LayerSig, call, capture, input_label, signature_of, supported,
                        tied_layers)

log = logging.getLogger("sparsekern")

#: Timer of whole-model measurements (dense model, time outside the layers).
MODEL_TIMER = TimerSettings(min_time=0.1, min_reps=5, max_reps=200, max_candidate_time=1.0)


class LayerLatency:
    """One entry (see measure.measure_signature for the dict it wraps).

    ``provenance``: how this process got it: "measured", "re-checked" (from the cache,
    confirmed by re-timing a few points), "re-measured" (the re-check disagreed), "cached"
    (from the cache without a re-check) or "given" (read from a table or built from
    numbers).
    """

    def __init__(self, entry: dict, provenance: str = "given"):
        self.entry = entry
        self.provenance = provenance
        self.recheck: Optional[dict] = None  # recheck_entry's result, when re-checked

    @property
    def dense_s(self) -> float:
        return float(self.entry["dense"]["median_s"])

    @property
    def dense_stable(self) -> bool:
        """False when dense's own timing stayed unstable: ``dense_s`` is then its fastest
        sample standing in (measure.settle_dense), and :attr:`dense_why` says why."""
        return bool(self.entry["dense"].get("stable", True))

    @property
    def dense_why(self) -> str:
        return str(self.entry["dense"].get("why") or "")

    @property
    def busy(self) -> Optional[bool]:
        """True when the load check saw a busy machine while this entry was measured, False
        when it saw a quiet one, None when the entry does not say (older files, entries
        built from numbers): ``entry["load"]``, see :func:`load_seen`."""
        load = self.entry.get("load")
        return bool(load["busy"]) if isinstance(load, dict) and "busy" in load else None

    @property
    def busy_why(self) -> str:
        return str((self.entry.get("load") or {}).get("why") or "") if self.busy else ""

    def _curve(self, fmt: str) -> List[Tuple[float, float, bool]]:
        """[(density, seconds, from the bytes model)] ascending in density: measured points,
        and the bytes-bound prediction of unstable points at densities nothing measured."""
        measured: Dict[float, List[float]] = {}
        model: Dict[float, List[float]] = {}
        for p in self.entry["formats"].get(fmt, []):
            if p.get("density") is None:
                continue
            d = round(float(p["density"]), 9)
            if p.get("median_s") is not None:
                measured.setdefault(d, []).append(float(p["median_s"]))
            elif p.get("model_s") is not None:
                model.setdefault(d, []).append(float(p["model_s"]))
        eff = self.efficiency(fmt)
        pts = [(d, sum(v) / len(v), False) for d, v in measured.items()]
        if eff is not None:  # the model only where the kernel has shown what it reaches here
            pts += [(d, eff * sum(v) / len(v), True) for d, v in model.items()
                    if d not in measured]
        pts.sort()
        fit = _monotone([(d, t) for d, t, _ in pts])
        return [(d, t, m) for (d, t), (_, _, m) in zip(fit, pts)]

    def efficiency(self, fmt: str) -> Optional[float]:
        """How close ``fmt``'s kernel gets to its bytes bound on this layer: the smallest
        measured / bound over its measured points (the best it achieved here; a point
        slowed by other load does not count against it), at least 1 (1 for measured points
        that record no bound). An unstable point's bytes-bound prediction is scaled by it, so
        it claims no more than the kernel has shown on this layer. None when no point of
        ``fmt`` was measured here: a bound alone says nothing of a kernel's overheads (on
        MiniLM's 384x384 layers, CSC at 50% is bounded at 0.77x dense and runs at 1.9x), so
        such a format gets no prediction (see :meth:`untimed_reason`)."""
        pts = [p for p in self.entry["formats"].get(fmt, []) if p.get("median_s") is not None]
        r = [float(p["median_s"]) / float(p["bound_s"]) for p in pts if p.get("bound_s")]
        if r:
            return max(1.0, min(r))
        return 1.0 if pts else None

    def points(self, fmt: str) -> List[Tuple[float, float]]:
        """[(density, seconds)] of ``fmt``'s points, ascending in density, made
        non-decreasing in time (storing more never makes a format faster, so a point
        faster than a sparser one is timing noise: adjacent violators are pooled). Unstable
        points count with their bytes-bound prediction times :meth:`efficiency` (see
        :meth:`from_model`)."""
        return [(d, t) for d, t, _ in self._curve(fmt)]

    def formats(self) -> List[str]:
        """Formats with at least one timed (or bytes-model predicted) point."""
        return [f for f in self.entry["formats"] if self.points(f)]

    def untimed_reason(self, fmt: str) -> str:
        pts = self.entry["formats"].get(fmt, [])
        if any(p.get("model_s") is not None for p in pts) and self.efficiency(fmt) is None:
            return ("every timing of it here stayed unstable (other load on the machine), and "
                    "its bytes bound alone does not choose it")
        for p in pts:
            if p.get("median_s") is None and p.get("model_s") is None:
                return p.get("reason") or "not timed"
        return "not measured"

    def _used(self, fmt: str, density: float) -> List[Tuple[float, float, bool]]:
        """The points :meth:`predict` reads for ``density``."""
        pts = self._curve(fmt)
        if not pts or density <= pts[0][0] or len(pts) == 1:
            return pts[:1]
        exact = [p for p in pts if p[0] == round(density, 9)]
        if exact:
            return exact
        for a, b in zip(pts, pts[1:]):
            if density <= b[0]:
                return [a, b]
        return pts[-2:]

    def from_model(self, fmt: str, density: float) -> bool:
        """True when :meth:`predict` of ``fmt`` at ``density`` rests on a point whose timing
        was unstable (so on the bytes-bound model, not on a measurement)."""
        return fmt != DENSE and any(m for _, _, m in self._used(fmt, density))

    def unstable(self) -> List[str]:
        """``"fmt@sparsity"`` of the points left unmeasured (timing unstable), led by
        ``"dense"`` when dense's own timing was (every prediction is compared with it)."""
        pts = [f"{f}@{p['sparsity']:g}" for f, pts in self.entry["formats"].items()
               for p in pts if p.get("status") == "unstable"]
        return pts if self.dense_stable else ["dense"] + pts

    def floor_s(self, fmt: str, density: float) -> float:
        """The least time a sparse format storing ``density`` of the entries can take:
        that fraction of dense's time (it reads that fraction of the entries, so it cannot
        skip more of dense's work; a prediction below it means dense's timing was slowed by
        other load). 0 for dense itself."""
        return 0.0 if fmt == DENSE else density * self.dense_s

    def predict(self, fmt: str, density: float) -> Optional[float]:
        """Seconds of ``fmt`` at stored fraction ``density`` (None when never timed).

        Piecewise-linear in the density between timed points; below the sparsest point
        the sparsest point's time (conservative); above the densest point at least
        proportional to the stored fraction (a kernel's time grows no slower than the
        entries it reads; a flat slope between two noisy points must not predict a full
        matrix as fast as a half-empty one), or the linear extrapolation from the last two
        points where that is higher.
        """
        if fmt == DENSE:
            return self.dense_s
        pts = self.points(fmt)
        if not pts:
            return None
        if density <= pts[0][0]:
            return pts[0][1]
        for (d0, t0), (d1, t1) in zip(pts, pts[1:]):
            if density <= d1:
                return t0 + (t1 - t0) * (density - d0) / (d1 - d0)
        d1, t1 = pts[-1]
        scaled = t1 * density / d1 if d1 > 0 else t1
        if len(pts) == 1:
            return scaled
        d0, t0 = pts[-2]
        return max(scaled, t1 + (t1 - t0) * (density - d1) / (d1 - d0))

    @classmethod
    def synthetic(cls, dense_s: float, curves: Mapping[str, Sequence[Tuple[float, float]]],
                  signature: Optional[dict] = None) -> "LayerLatency":
        """An entry from given numbers: ``curves`` {format: [(density, seconds), ...]}."""
        formats = {f: [{"sparsity": 1.0 - d, "density": d, "status": "ok", "median_s": t,
                        "iqr_s": 0.0, "backend": "synthetic", "reason": ""} for d, t in pts]
                   for f, pts in curves.items()}
        for f in formats:
            parse_format(f)
        return cls({"signature": signature or {}, "dense": {"median_s": dense_s, "iqr_s": 0.0},
                    "formats": formats})


def _monotone(pts: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """The least-squares non-decreasing fit of the times (pool adjacent violators)."""
    blocks: List[List[float]] = []  # [sum, count]
    for _, t in pts:
        blocks.append([t, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    times = [b[0] / b[1] for b in blocks for _ in range(int(b[1]))]
    return [(d, t) for (d, _), t in zip(pts, times)]


def _linear(pts: List[Tuple[float, float]], x: float) -> float:
    """The piecewise-linear function through ``pts`` [(x, y)] (ascending, distinct x) at
    ``x``, extended by its end segments (proportional to x with a single point)."""
    if len(pts) == 1:
        return pts[0][1] * x / pts[0][0] if pts[0][0] > 0 else pts[0][1]
    i = 1
    while i < len(pts) - 1 and x > pts[i][0]:
        i += 1
    (x0, y0), (x1, y1) = pts[i - 1], pts[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else y1


def _entry_dicts(layers: Mapping[str, Mapping[str, LayerLatency]]) -> dict:
    return {n: {lab: e.entry for lab, e in per.items()} for n, per in layers.items()}


def _latencies(d: Mapping[str, Mapping[str, dict]]) -> Dict[str, Dict[str, LayerLatency]]:
    return {n: {lab: LayerLatency(e) for lab, e in per.items()} for n, per in d.items()}


Choice = Tuple[str, float]  # (format name or "dense", stored fraction)


@dataclass
class LatencyTable:
    """Latency of a model's candidate layers at each example input shape.

    Attributes:
        shapes: labels of the example inputs (e.g. ``"[1, 64]"``), in the given order.
        layers: {layer name: {shape label: LayerLatency}}.
        other_s: {shape label: seconds the model spends outside the candidate layers}
            (0 when only layers were measured).
        model_s: {shape label: measured latency of the dense model} (None when not measured).
        meta: machine, software, grid, cache hits/misses; "context": the cache context of
            ``layers``; "busy" and "load": whether entries were measured on a busy machine
            and what the load check saw (:func:`load_meta`; absent in older files: not
            known); with ``light``: "light_context", "outside_bytes" (what the model
            streams outside its candidate layers) and "llc_bytes".
        light: {layer name: {shape label: LayerLatency}} timed in the lighter context
            meta["light_context"] ("llc"), for a "cold" table of a model that pruning can
            bring into the last-level cache (empty otherwise). A plan's prediction mixes
            the two by its streamed bytes (:meth:`cold_share`).
    """

    shapes: List[str]
    layers: Dict[str, Dict[str, LayerLatency]]
    other_s: Dict[str, float] = field(default_factory=dict)
    model_s: Dict[str, Optional[float]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    light: Dict[str, Dict[str, LayerLatency]] = field(default_factory=dict)

    def check_fits(self, model: nn.Module, names: Optional[Iterable[str]] = None) -> None:
        """ValueError when a layer of the table (``names``: those to use, default all) is
        missing from ``model`` or has another geometry (kind, shape, bias, dtype, device)
        than the layer the table timed: a table of another model would plan with its
        timings, by name alone."""
        modules = dict(model.named_modules())
        for name in (self.layers if names is None else names):
            per = self.layers.get(name, {})
            key = next((e.entry.get("signature") for e in per.values()), None)
            try:
                timed = geometry(LayerSig.from_key(key))
            except (KeyError, TypeError, ValueError):
                continue  # a synthetic entry (no layer behind it): nothing to compare
            mod = modules.get(name)
            if mod is None or not supported(mod):
                got = "does not exist" if mod is None else f"is a {type(mod).__name__}"
                raise ValueError(f"latency_table: its layer {name!r} {got} in "
                                 f"{type(model).__name__}; build the table for this model "
                                 f"(sparsekern.auto.build_table)")
            have = geometry(signature_of(mod, ()))
            if have != timed:
                raise ValueError(f"latency_table: layer {name!r} is {_geometry_text(have)} in "
                                 f"{type(model).__name__} but the table timed "
                                 f"{_geometry_text(timed)}; expected the table of this model "
                                 f"(sparsekern.auto.build_table)")

    def formats(self) -> List[str]:
        """Every format name that appears in some entry."""
        out: List[str] = []
        for per in self.layers.values():
            for e in per.values():
                out += [f for f in e.entry["formats"] if f not in out]
        return out

    def layer_s(self, name: str, choice: Choice, light: bool = False) -> Dict[str, float]:
        """{shape: predicted seconds} of layer ``name`` in ``choice`` (fmt, density), never
        below :meth:`LayerLatency.floor_s`; from the ``light`` entries when asked."""
        fmt, density = choice
        out = {}
        for label, e in (self.light if light else self.layers)[name].items():
            t = e.predict(fmt, density)
            if t is None:
                raise ValueError(f"layer {name!r}: format {fmt!r} was never timed at {label} "
                                 f"({e.untimed_reason(fmt)})")
            out[label] = max(t, e.floor_s(fmt, density))
        return out

    def layer_bytes(self, name: str, choice: Choice) -> Optional[float]:
        """Bytes layer ``name`` streams per call in ``choice`` (fmt, density): the dense
        weight's, or the packed format's, linear in the density through its grid points;
        None when the entry records no bytes (made by hand)."""
        entry = next(iter(self.layers[name].values())).entry
        dense_b = (entry.get("bytes") or {}).get("dense")
        if not dense_b:
            return None
        fmt, density = choice
        if fmt == DENSE:
            return float(dense_b)
        pts = sorted({float(p["density"]): float(p["bytes"])
                      for p in entry["formats"].get(fmt, [])
                      if p.get("bytes") and p.get("density") is not None}.items())
        return _linear(pts, density) if pts else density * float(dense_b)

    def plan_bytes(self, choices: Optional[Mapping[str, Choice]] = None) -> Optional[float]:
        """Bytes the model streams per call with ``choices`` (other layers dense); None when
        an entry records no bytes."""
        return self._plan_bytes(self._checked(choices))

    def _plan_bytes(self, choices: Mapping[str, Choice]) -> Optional[float]:
        sizes = [self.layer_bytes(n, choices.get(n, (DENSE, 1.0))) for n in self.layers]
        if any(b is None for b in sizes):
            return None
        return float(self.meta.get("outside_bytes") or 0.0) + sum(sizes)

    def cold_share(self, choices: Optional[Mapping[str, Choice]] = None) -> float:
        """How far the model with ``choices`` runs in the table's context rather than the
        light one (sparsekern.auto.measure.cold_share of its streamed bytes): 1 without
        light entries, or when an entry records no bytes."""
        return self._cold_share(self._checked(choices))

    def _cold_share(self, choices: Mapping[str, Choice]) -> float:
        if not self.light:
            return 1.0
        nbytes = self._plan_bytes(choices)
        return 1.0 if nbytes is None else cold_share(int(nbytes), self.meta.get("llc_bytes"))

    def predict(self, choices: Optional[Mapping[str, Choice]] = None) -> Dict[str, float]:
        """{shape: predicted model seconds} with ``choices`` {layer: (fmt, density)}; other
        layers dense. With light entries each layer's time is the mix (by
        :meth:`cold_share`) of its time in the two contexts."""
        choices = self._checked(choices)
        share = self._cold_share(choices)
        total = {label: float(self.other_s.get(label, 0.0)) for label in self.shapes}
        for name in self.layers:
            for label, t in self.mixed_s(name, choices.get(name, (DENSE, 1.0)), share).items():
                total[label] += t
        return total

    def _checked(self, choices: Optional[Mapping[str, Choice]]) -> Mapping[str, Choice]:
        """``choices``, after checking every layer is in the table, every format known and
        every stored fraction in (0, 1]."""
        choices = choices or {}
        unknown = [n for n in choices if n not in self.layers]
        if unknown:
            raise ValueError(f"choices name layers {unknown} that the latency table does not "
                             f"have; expected some of {list(self.layers)}")
        for n, (fmt, density) in choices.items():
            if fmt != DENSE:
                parse_format(fmt)
            if not 0.0 < float(density) <= 1.0:  # NaN fails too
                raise ValueError(f"choices[{n!r}] = ({fmt!r}, {density!r}): the stored "
                                 f"fraction must be in (0, 1]")
        return choices

    def mixed_s(self, name: str, choice: Choice, share: float) -> Dict[str, float]:
        """:meth:`layer_s` of ``name`` in ``choice``, ``share`` of it in the table's context
        and the rest in the light one, the light time capped at the table's (a layer is
        never slower from the LLC than from memory). Where only one context has a time for
        ``choice`` (the other's timing stayed unstable) it stands in when the plan runs
        wholly there, and the table's context's time (an upper bound) otherwise."""
        if share >= 1.0 or name not in self.light:
            return self.layer_s(name, choice)
        try:
            light = self.layer_s(name, choice, light=True)
        except ValueError:
            return self.layer_s(name, choice)
        try:
            heavy = self.layer_s(name, choice)
        except ValueError:
            if share > 0.0:
                raise
            return light
        return {lab: share * t + (1.0 - share) * min(light.get(lab, t), t)
                for lab, t in heavy.items()}

    @property
    def busy(self) -> Optional[bool]:
        """``meta["busy"]``: True when some entry of the table was measured on a busy machine
        (``meta["load"]`` says which and what the load check saw), False when none was,
        None when the table does not say (saved before it did, or built from numbers)."""
        flag = self.meta.get("busy")
        return flag if isinstance(flag, bool) else None

    def to_dict(self) -> dict:
        return {"shapes": list(self.shapes), "layers": _entry_dicts(self.layers),
                "other_s": dict(self.other_s), "model_s": dict(self.model_s),
                "meta": self.meta, "light": _entry_dicts(self.light)}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        """The table of ``to_dict``'s dict; ValueError naming the first thing that is not
        (a file that is not a saved table loaded, then failed in predict with a KeyError)."""
        _check_table_dict(d)
        return cls(list(d["shapes"]), _latencies(d["layers"]),
                   dict(d.get("other_s", {})), dict(d.get("model_s", {})), d.get("meta", {}),
                   _latencies(d.get("light") or {}))

    def save(self, path: Union[str, os.PathLike]) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "LatencyTable":
        with open(path) as f:
            try:
                d = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"LatencyTable.load: {os.fspath(path)!r} is not a saved latency "
                                 f"table (not JSON: {e})") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"LatencyTable.load: {os.fspath(path)!r} is not a saved latency "
                             f"table: {e}") from None


def _check_table_dict(d) -> None:
    """Raise ValueError unless ``d`` has to_dict's structure, down to every point of every
    entry (:func:`entry_problem`), with every layer timed at each of ``shapes``."""
    if not isinstance(d, dict) or not isinstance(d.get("shapes"), list) or \
            not isinstance(d.get("layers"), dict):
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"expected a dict with 'shapes' (a list) and 'layers' (a dict), got {got}")
    shapes = d["shapes"]
    if not shapes or not all(isinstance(s, str) for s in shapes) or len(set(shapes)) != len(shapes):
        raise ValueError(f"'shapes' must be a non-empty list of distinct shape labels (str), "
                         f"got {shapes!r}")
    for part in ("layers", "light"):
        if not isinstance(d.get(part) or {}, dict):
            raise ValueError(f"'{part}' must be a dict of layers, got {type(d[part]).__name__}")
        for name, per in (d.get(part) or {}).items():
            if not isinstance(per, dict):
                raise ValueError(f"{part}[{name!r}] must map shape labels to entries, got "
                                 f"{type(per).__name__}")
            labels = list(per)
            if (part == "layers" and sorted(labels) != sorted(shapes)) or \
                    (part == "light" and not set(labels) <= set(shapes)):
                raise ValueError(f"{part}[{name!r}] has entries at {labels}, expected one at each "
                                 f"of the table's shapes {shapes}")
            if part == "light" and name not in d["layers"]:
                raise ValueError(f"light[{name!r}] names a layer that 'layers' does not have")
            for label, e in per.items():
                why = entry_problem(e)
                if why is not None:
                    raise ValueError(f"{part}[{name!r}][{label!r}] is not a latency entry: {why}")
    for part, positive in (("other_s", False), ("model_s", True)):
        times = d.get(part, {})
        if not isinstance(times, dict):
            raise ValueError(f"'{part}' must map shape labels to seconds, got "
                             f"{type(times).__name__}")
        for label, t in times.items():
            if label not in shapes:
                raise ValueError(f"{part}[{label!r}]: not one of the table's shapes {shapes}")
            ok = (t is None and positive) or (_is_num(t) and math.isfinite(t) and
                                               (t > 0 if positive else t >= 0))
            if not ok:
                raise ValueError(f"{part}[{label!r}] must be a finite "
                                 f"{'positive' if positive else 'non-negative'} number of "
                                 f"seconds{' or null' if positive else ''}, got {t!r}")
    if not isinstance(d.get("meta", {}), dict):
        raise ValueError(f"'meta' must be a dict, got {type(d['meta']).__name__}")
    busy = d.get("meta", {}).get("busy")
    if busy is not None and not isinstance(busy, bool):  # absent or null: not known
        raise ValueError(f"meta['busy'] must be true, false or null, got {busy!r}")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad_seconds(v, none_ok: bool = True, zero_ok: bool = False) -> bool:
    if v is None:
        return not none_ok
    return not (_is_num(v) and math.isfinite(v) and (v >= 0 if zero_ok else v > 0))


def entry_problem(e) -> Optional[str]:
    """What is wrong with a latency entry (measure.measure_signature's dict, or
    LayerLatency.synthetic's), None when nothing: types, finite positive times, fractions in
    [0, 1], known format names, and each measured point's ratio consistent with its median
    over dense's (within :data:`RATIO_SLACK`). A cache entry or table file that fails it was
    damaged or edited by hand."""
    if not isinstance(e, dict):
        return f"expected a dict, got {type(e).__name__}"
    dense = e.get("dense")
    if not isinstance(dense, dict):
        return f"'dense' must be a dict with 'median_s', got {dense!r}"
    if _bad_seconds(dense.get("median_s"), none_ok=False):
        return f"dense median_s must be a finite positive number of seconds, got " \
               f"{dense.get('median_s')!r}"
    dense_s = float(dense["median_s"])
    if not isinstance(dense.get("stable", True), bool):
        return f"dense 'stable' must be true or false, got {dense['stable']!r}"
    sig = e.get("signature")
    if sig is not None and not isinstance(sig, dict):
        return f"'signature' must be a dict, got {sig!r}"
    nbytes = e.get("bytes")
    if nbytes is not None and (not isinstance(nbytes, dict) or any(
            _bad_seconds(nbytes.get(k), zero_ok=True) for k in ("dense", "io"))):
        return f"'bytes' must be a dict of non-negative byte counts, got {nbytes!r}"
    why = _load_problem(e.get("load"))
    if why is not None:
        return why
    threads = e.get("threads")
    if threads is not None and not is_thread_count(threads):
        return f"'threads' must be a positive int (the threads it was timed on), got {threads!r}"
    formats = e.get("formats")
    if not isinstance(formats, dict):
        return f"'formats' must map format names to lists of points, got {formats!r}"
    for fmt, pts in formats.items():
        try:
            parse_format(fmt)
        except (ValueError, TypeError) as err:
            return f"format {fmt!r}: {err}"
        if not isinstance(pts, list):
            return f"formats[{fmt!r}] must be a list of points, got {pts!r}"
        for i, p in enumerate(pts):
            where = f"formats[{fmt!r}][{i}]"
            if not isinstance(p, dict):
                return f"{where} must be a point (a dict), got {p!r}"
            for k in ("density", "sparsity"):
                v = p.get(k)
                if v is not None and not (_is_num(v) and 0.0 <= v <= 1.0):
                    return f"{where}: {k} must be a number in [0, 1], got {v!r}"
            if p.get("status") == "unstable" and p.get("sparsity") is None:
                return f"{where}: an unstable point needs its sparsity"
            for k in ("median_s", "model_s", "bound_s", "ratio"):
                if _bad_seconds(p.get(k)):
                    return f"{where}: {k} must be a finite positive number or null, got " \
                           f"{p.get(k)!r}"
            for k in ("iqr_s", "bytes"):
                if _bad_seconds(p.get(k), zero_ok=True):
                    return f"{where}: {k} must be a finite non-negative number or null, got " \
                           f"{p.get(k)!r}"
            if not isinstance(p.get("status", "ok"), str) or \
                    not isinstance(p.get("reason") or "", str):
                return f"{where}: status and reason must be text"
            med, ratio = p.get("median_s"), p.get("ratio")
            if med is not None and ratio is not None:
                if not ratio_agrees(med, dense_s, ratio):
                    return (f"{where}: median_s {med!r} is {med / dense_s:.3g}x dense's "
                            f"{dense_s!r} but its ratio says {ratio!r}x (edited times)")
    return None


def _load_problem(load) -> Optional[str]:
    """What is wrong with an entry's "load" (:func:`load_seen`); None when nothing or when
    it is absent (entries saved before it existed: not known)."""
    if load is None:
        return None
    if not isinstance(load, dict) or not isinstance(load.get("busy"), bool):
        return f"'load' must be a dict with 'busy' true or false, got {load!r}"
    if not isinstance(load.get("why") or "", str):
        return f"load 'why' must be text or null, got {load['why']!r}"
    for k in LOAD_FIGURES:
        if _bad_seconds(load.get(k), zero_ok=True):
            return f"load {k!r} must be a finite non-negative number or null, got {load[k]!r}"
    return None


# ------------------------------------------------------------------------ building a table

def entry_key(sig: LayerSig, settings: MeasureSettings) -> dict:
    """The cache key of one layer entry: machine, software, signature, grid, seed and the
    cache context (settings.context must be resolved: "warm", "llc" or "cold")."""
    return {"machine": machine_key(torch.device(sig.device)), "software": software_key(),
            "signature": sig.to_key(), "grid": settings.grid.to_key(), "seed": settings.seed,
            "context": settings.context}


def _sig_bytes(sigs: Iterable[LayerSig]) -> int:
    """Weight + bias bytes of the distinct layer geometries among ``sigs``."""
    total = 0
    for g in {geometry(s) for s in sigs}:
        M, K = g.matrix_shape
        total += (M * K + (M if g.bias else 0)) * getattr(torch, g.dtype).itemsize
    return total


def layer_entry(sig: LayerSig, settings: Optional[MeasureSettings] = None,
                cache: Optional[DiskCache] = None) -> LayerLatency:
    """The entry of ``sig``: from ``cache`` if there, else measured (and stored)."""
    return layer_entries([sig], settings, cache)[sig]


def layer_entries(sigs: Sequence[LayerSig], settings: Optional[MeasureSettings] = None,
                  cache: Optional[DiskCache] = None, progress: bool = False
                  ) -> Dict[LayerSig, LayerLatency]:
    """{signature: entry}: cached ones re-checked and reused, the others measured (one
    build of the candidates per layer geometry, timed at each of its input shapes) and
    stored. A cached entry whose re-check (:func:`~.measure.recheck_entry`, when
    ``settings.recheck`` > 0) disagrees is measured again and replaced. An entry with
    points whose timing stayed unstable is used (those points predicted by the bytes
    model) but not stored: the next run measures it again."""
    settings = (settings or MeasureSettings()).resolved(_sig_bytes(sigs))
    out: Dict[LayerSig, LayerLatency] = {}
    todo: Dict[LayerSig, List[LayerSig]] = {}
    checks: Dict[LayerSig, dict] = {}
    for sig in dict.fromkeys(sigs):
        hit = cache.load(entry_key(sig, settings)) if cache is not None else None
        if hit is not None:
            hit = _valid_hit(cache, entry_key(sig, settings), sig, hit)
        if hit is not None and settings.recheck > 0:
            try:
                checks[sig] = recheck_entry(sig, hit, settings)
            except Exception as e:  # a damaged entry: measure again rather than fail
                checks[sig] = {"agree": False, "points": [],
                               "why": f"re-check failed: {type(e).__name__}: {e}"}
            if not checks[sig]["agree"]:
                log.info("latency table: cached entry of %s disagrees with a re-check (%s): "
                         "measuring it again", sig.label(), checks[sig]["why"])
                hit = None
        if hit is not None:
            out[sig] = LayerLatency(hit, "re-checked" if sig in checks else "cached")
            out[sig].recheck = checks.get(sig)
        else:
            todo.setdefault(geometry(sig), []).append(sig)
    from tqdm.auto import tqdm
    warned = False
    for group in tqdm(list(todo.values()), desc="latency table", disable=not progress,
                      leave=False):
        log.info("latency table: measuring %s (%s)", ", ".join(g.label() for g in group),
                 settings.context)
        done = _measure_group(group, settings, cache, checks, warn=not warned)
        warned = warned or any(lat.busy for lat in done.values())
        out.update(done)
    return out


def _measure_group(group: Sequence[LayerSig], settings: MeasureSettings,
                   cache: Optional[DiskCache], checks: Dict[LayerSig, dict], warn: bool
                   ) -> Dict[LayerSig, LayerLatency]:
    """Measure signatures of one geometry; each entry records what the load check saw
    (``entry["load"]``, see :func:`load_seen`: a saved table keeps saying it was measured
    under load), and only entries measured on a quiet machine with every point stable are
    stored in ``cache``."""
    meter = OthersMeter().start()
    entries = measure_signatures(group, settings)
    load = fewer_threads(load_seen(meter.stop()), entries[0].get("threads"))
    if load["busy"] and warn:
        log.warning("latency table: measured on a busy machine (%s): the entries serve this "
                    "call%s and say so (their 'load', the table's meta 'busy'); a quiet run "
                    "may choose otherwise", load["why"],
                    "" if cache is None else " but are not cached")
    out: Dict[LayerSig, LayerLatency] = {}
    for sig, entry in zip(group, entries):
        entry["load"] = dict(load)
        lat = LayerLatency(entry, "re-measured" if sig in checks else "measured")
        unstable = lat.unstable()
        if cache is not None and not unstable and not load["busy"]:
            cache.store(entry_key(sig, settings), entry)
        elif cache is not None:  # never cache what could not be measured: next run retries
            log.info("latency table: %s not cached: %s", sig.label(),
                     f"the machine was busy ({load['why']})" if load["busy"] else
                     f"{len(unstable)} points stayed unstable ({', '.join(unstable[:4])})")
        lat.recheck = checks.get(sig)
        out[sig] = lat
    return out


def _valid_hit(cache: DiskCache, key: dict, sig: LayerSig, hit) -> Optional[dict]:
    """``hit`` when it is a sound entry of ``sig``; else None (counted as a miss, not a hit)
    with a warning naming the cache file: a damaged or hand-edited entry is measured again
    (and replaced), never trusted."""
    why = entry_problem(hit)
    if why is None and hit.get("signature") != sig.to_key():
        why = f"its signature {hit.get('signature')!r} is not the key's {sig.to_key()!r}"
    if why is None:
        return hit
    cache.hits -= 1
    cache.misses += 1
    warnings.warn(f"sparsekern cache: {str(cache.path(key))!r} holds a damaged latency entry "
                  f"({why}): it counts as a miss, measuring {sig.label()} again",
                  RuntimeWarning, stacklevel=4)
    return None


def machine_busy(others_cpus: Optional[float] = None, figures: Optional[dict] = None
                 ) -> Optional[str]:
    """Why the machine is busy (other runnable threads or stolen time now; with
    ``others_cpus``, the average CPUs other processes used during the measurement, from
    :class:`~sparsekern.timing.load.OthersMeter`), or None when it is quiet: a latency
    measured while it is busy is never cached. ``figures`` (a dict), when given, receives
    what the check read: "runnable_others", "steal", "load_avg" (None where unknown)."""
    reasons = []
    if others_cpus is not None and others_cpus > OTHERS_CPU_LIMIT:
        reasons.append(f"other processes used {others_cpus:.2f} CPUs on average during the "
                       f"measurement (limit {OTHERS_CPU_LIMIT})")
    report = detect_load(window_s=0.05)
    if figures is not None:
        figures.update(runnable_others=report.others, steal=report.steal,
                       load_avg=report.load_avg)
    reasons += report.reasons if report.busy else []
    return "; ".join(reasons) or None


#: The figures of an entry's "load" (see :func:`load_seen`), None where unknown.
LOAD_FIGURES = ("others_cpus", "runnable_others", "steal", "load_avg")


def load_seen(others_cpus: Optional[float]) -> dict:
    """What the load check saw over a measurement, as an entry stores it (``"load"``):
    ``{"busy": bool, "why": str or None, "others_cpus"`` (average CPUs other processes used
    during it), ``"runnable_others", "steal", "load_avg"}`` (right after it; None where
    unknown)."""
    figures: dict = {}
    why = machine_busy(others_cpus, figures)
    load = {"busy": bool(why), "why": why, "others_cpus": others_cpus}
    load.update({k: figures.get(k) for k in LOAD_FIGURES[1:]})
    return load


def fewer_threads(load: dict, timed_on: Optional[int]) -> dict:
    """``load`` (see :func:`load_seen`), marked busy when the entries were timed on fewer
    threads than this process runs (measure.for_the_load saw a busy machine just before):
    their times are not those of a quiet run at this thread count, so they are never cached."""
    running = torch.get_num_threads()
    if timed_on is None or timed_on >= running:
        return load
    note = (f"timed on {timed_on} of {running} threads, the cores the load left "
            f"(a look at the load before timing found the machine busy)")
    return dict(load, busy=True, why="; ".join(w for w in (load.get("why"), note) if w))


def default_cache(cache) -> Optional[DiskCache]:
    """``cache``: a DiskCache, True/None (the default folder, $SPARSEKERN_CACHE or
    ~/.cache/sparsekern), a str or os.PathLike (that folder as the cache root: entries go
    to ``<folder>/latency``) or False (no cache); TypeError naming ``cache`` otherwise."""
    if isinstance(cache, DiskCache):
        return cache
    if cache is False:
        return None
    if cache is None or cache is True:
        return DiskCache("latency")
    if isinstance(cache, (str, os.PathLike)):
        if not os.fspath(cache):
            raise ValueError("cache: got an empty path; expected a folder (or None for the "
                             "default folder, False for no cache)")
        return DiskCache("latency", root=cache)
    raise TypeError(f"cache must be a DiskCache, a folder (str or os.PathLike), None (the "
                    f"default folder) or False (no cache), got {type(cache).__name__}: "
                    f"{cache!r}")


def _entries(sigs_by_label: Dict[str, Dict[str, LayerSig]], settings, cache, progress
             ) -> Dict[str, Dict[str, LayerLatency]]:
    done = layer_entries([s for sigs in sigs_by_label.values() for s in sigs.values()],
                         settings, cache, progress)
    layers: Dict[str, Dict[str, LayerLatency]] = {}
    for label, sigs in sigs_by_label.items():
        for name, sig in sigs.items():
            layers.setdefault(name, {})[label] = done[sig]
    return layers


def provenance(layers: Mapping[str, Mapping[str, LayerLatency]]) -> Dict[str, List[str]]:
    """{provenance: ["layer @ shape", ...]} of a table's entries (see LayerLatency), plus
    "unstable": ["layer @ shape: fmt@sparsity", ...], the points left unmeasured."""
    out: Dict[str, List[str]] = {}
    for name, per in layers.items():
        for label, e in per.items():
            out.setdefault(e.provenance, []).append(f"{name or '<model>'} @ {label}")
            out.setdefault("unstable", []).extend(
                f"{name or '<model>'} @ {label}: {u}" for u in e.unstable())
    return out


def load_meta(layers: Mapping[str, Mapping[str, LayerLatency]],
              light: Optional[Mapping[str, Mapping[str, LayerLatency]]] = None) -> dict:
    """A table's ``{"busy": bool or None, "load": {...}}`` from its entries' "load": busy
    when some entry was measured on a busy machine, None when no entry says so but some do
    not say; "load" lists those entries ("busy_entries", light ones after "light "), the
    load check's reasons ("why") and the highest of each figure (LOAD_FIGURES) seen."""
    seen = [(f"{prefix}{name or '<model>'} @ {label}", e)
            for prefix, part in (("", layers), ("light ", light or {}))
            for name, per in part.items() for label, e in per.items()]
    busy = [where for where, e in seen if e.busy]
    known = all(e.busy is not None for _, e in seen)
    loads = [e.entry["load"] for _, e in seen if e.busy is not None]
    figures = {k: max((l[k] for l in loads if l.get(k) is not None), default=None)
               for k in LOAD_FIGURES}
    whys = list(dict.fromkeys(e.busy_why for _, e in seen if e.busy_why))
    return {"busy": True if busy else (False if known else None),
            "load": dict(busy_entries=busy, why="; ".join(whys) or None, **figures)}


def _meta(settings: MeasureSettings, cache: Optional[DiskCache], device,
          layers: Optional[Mapping[str, Mapping[str, LayerLatency]]] = None,
          light: Optional[Mapping[str, Mapping[str, LayerLatency]]] = None) -> dict:
    meta = {"machine": machine_key(torch.device(device)), "software": software_key(),
            "grid": settings.grid.to_key(), "context": settings.context,
            "dense_baseline": "the layer's own torch module (what a layer left dense runs), "
                              "timed in alternation with every point",
            "entries": provenance(layers or {}),
            "cache": None if cache is None else {"folder": str(cache.folder), "hits": cache.hits,
                                                 "misses": cache.misses}}
    meta.update(load_meta(layers or {}, light))
    return meta


def layer_table(modules: Mapping[str, nn.Module], input_shapes: Mapping[str, Sequence[int]],
                settings: Optional[MeasureSettings] = None, cache=None,
                progress: bool = False) -> LatencyTable:
    """A table of single layers (no model): ``modules`` {name: layer}, each measured on
    ``input_shapes[name]``. The shape label of every entry is ``"layer input"``; other_s = 0.
    """
    settings = (settings or MeasureSettings()).resolved(module_bytes(modules.values()))
    cache = default_cache(cache)
    label = "layer input"
    sigs = {label: {n: signature_of(m, input_shapes[n]) for n, m in modules.items()}}
    layers = _entries(sigs, settings, cache, progress)
    device = next((m.weight.device for m in modules.values()), torch.device("cpu"))
    return LatencyTable([label], layers, {label: 0.0}, {label: None},
                        _meta(settings, cache, device, layers))


def _geometry_text(g: LayerSig) -> str:
    """"linear 2048x256 (bias, float32, cpu)": what a table entry's layer is."""
    M, K = g.matrix_shape
    return (f"{g.kind} {M}x{K} ({'bias' if g.bias else 'no bias'}, {g.dtype}, {g.device}"
            f"{', ' + str(g.conv) if g.conv else ''})")


class _Stub(nn.Module):
    """Stands in for a layer: returns the output it was given, in no time."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, *args, **kwargs):
        return self.out


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def stubbed_copy(model: nn.Module, example_input, layer_names: Iterable[str]) -> nn.Module:
    """A copy of ``model`` whose layers ``layer_names`` are stubs that return, instantly,
    the output they gave on ``example_input``: timing it measures the time outside them."""
    names = [n for n in layer_names if n]
    outs: Dict[str, object] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: outs.setdefault(n, o)) for n in names]
    try:
        with eval_mode(model):  # every module's own train/eval flag comes back
            call(model, example_input)
    finally:
        for h in handles:
            h.remove()
    originals = {n: model.get_submodule(n) for n in names if n in outs}
    try:
        for n, m in originals.items():
            _set(model, n, _Stub(outs[n]))
        stubbed = copy.deepcopy(model)
    finally:
        for n, m in originals.items():
            _set(model, n, m)
    return stubbed.eval()


@torch.no_grad()
def measure_model(model: nn.Module, example_input, layer_names: Iterable[str],
                  timer: Optional[TimerSettings] = None, context: str = "warm"
                  ) -> Tuple[float, float]:
    """(dense model seconds, seconds outside ``layer_names``) on ``example_input``.

    The time outside is measured directly: a :func:`stubbed_copy` of the model, timed
    interleaved with the model itself; the model's samples start in the cache state
    ``context`` (default "warm": back to back, the model sets its own cache state), the
    copy's always warm (it works on activations the layer before just wrote).
    """
    stubbed = stubbed_copy(model, example_input, layer_names)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with eval_mode(model):
        res = time_modules({"dense": lambda x: call(model, x),
                            "other": lambda x: call(stubbed, x)},
                           example_input, device, timer or MODEL_TIMER, "warm")
        if context != "warm":
            res["dense"] = time_modules({"dense": lambda x: call(model, x)}, example_input,
                                        device, timer or MODEL_TIMER, context)["dense"]
    return res["dense"]["median_s"], res["other"]["median_s"]


def build_table(model: nn.Module, example_inputs, layers=None,
                settings: Optional[MeasureSettings] = None, cache=None,
                measure_whole_model: bool = True, progress: bool = False) -> LatencyTable:
    """Measure (or load from the cache) the latency table of ``model``.

    Args:
        model: the dense model (its candidate layers: every nn.Linear and groups=1
            nn.Conv2d, or ``layers``).
        example_inputs: one example input (a tensor, a Mapping such as a tokenizer's
            output, ``sparsekern.Args``, or a tuple of model arguments) or a list of them, e.g. ``[x[:1], x[:64]]`` for batch 1 and 64. Each is a shape of
            the table, labelled by its shape.
        settings: grid (sparsities, block shapes, layouts), timer, seed and cache context
            ("auto": "warm" when the weights the model streams fit in L2, "llc" when
            they run from the last-level cache, up to LLC_LIGHT of it, else "cold"; see
            sparsekern.auto.measure). With "auto" and ``measure_whole_model``, a "cold"
            table of a model that pruning can bring into the last-level cache also holds
            its layers timed "llc" (``LatencyTable.light``): a plan's prediction mixes
            both by the bytes it streams. The dense model and the time outside the layers
            are timed back to back (a model sets its own cache state).
        cache: a DiskCache, a folder (str or os.PathLike: the cache root, entries under
            ``<folder>/latency``), None (the default folder, $SPARSEKERN_CACHE or
            ~/.cache/sparsekern) or False (measure everything, store nothing); any other
            value is a TypeError naming ``cache``.
        measure_whole_model: also time the dense model and the time outside the layers
            (needed to predict whole-model latency; not cached, it takes a fraction of a
            second per shape).

    A layer whose weight is tied to another module's (GPT-2's lm_head) is left out of the
    table (its time counts as outside the layers): sparsify leaves it dense, so no search
    may plan on pruning it; ``meta["left_alone"]`` {name: why} lists such layers.
    """
    settings = settings or MeasureSettings()
    # light entries serve whole-plan predictions; a context the caller forces is kept
    plans = measure_whole_model and settings.context == "auto"
    settings = settings.resolved(streamed_bytes(model))
    cache = default_cache(cache)
    inputs = list(example_inputs) if isinstance(example_inputs, list) else [example_inputs]
    if not inputs:
        raise ValueError("example_inputs is empty: give at least one example input")
    labels = [input_label(x) for x in inputs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"example_inputs have repeated shapes {labels}; give distinct shapes")
    sigs = {lab: capture(model, x, layers) for lab, x in zip(labels, inputs)}
    left_alone = tied_layers(model, list(dict.fromkeys(n for s in sigs.values() for n in s)))
    for name, why in left_alone.items():
        log.info("latency table: %s left alone: %s", name, why)
    sigs = {lab: {n: g for n, g in s.items() if n not in left_alone} for lab, s in sigs.items()}
    if left_alone and not any(sigs.values()):
        raise ValueError(f"every candidate layer of {type(model).__name__} that ran is left "
                         f"alone: {left_alone}")
    if not any(sigs.values()):
        raise ValueError(f"no nn.Linear / nn.Conv2d (groups=1) layer of {type(model).__name__} "
                         f"ran on the example input")
    table_layers = _entries(sigs, settings, cache, progress)
    light, light_meta = (_light_entries(model, sigs, table_layers, settings, cache, progress)
                         if plans else ({}, {}))
    other, whole = {}, {}
    for lab, x in zip(labels, inputs):
        if measure_whole_model:
            whole[lab], other[lab] = measure_model(model, x, sigs[lab])
        else:
            whole[lab], other[lab] = None, 0.0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    meta = _meta(settings, cache, device, table_layers, light)
    meta.update(light_meta)
    meta["left_alone"] = left_alone
    return LatencyTable(labels, table_layers, other, whole, meta, light)


def _least_bytes(per: Mapping[str, LayerLatency]) -> float:
    """The fewest bytes a layer can stream: dense or the sparsest point of any format."""
    entry = next(iter(per.values())).entry
    sizes = [float((entry.get("bytes") or {}).get("dense") or 0.0)]
    sizes += [float(p["bytes"]) for pts in entry["formats"].values() for p in pts
              if p.get("bytes")]
    return min(sizes)


def _light_entries(model: nn.Module, sigs, layers, settings: MeasureSettings, cache, progress):
    """({layer: {shape: entry}} in the "llc" context, meta) for a "cold" table whose model
    its sparsest plan brings under LLC_HEAVY of the last-level cache (the plans then run
    partly or wholly from it); ({}, meta) when it cannot, ({}, {}) for a lighter table."""
    if settings.context != "cold":
        return {}, {}
    names = list(layers)
    outside = max(0, streamed_bytes(model) - module_bytes(
        [model.get_submodule(n) for n in names]))
    llc = last_level_cache_bytes()
    meta = {"outside_bytes": outside, "llc_bytes": llc}
    least = outside + sum(_least_bytes(layers[n]) for n in names)
    if cold_share(int(least), llc) >= 1.0:
        return {}, meta
    light_settings = dataclasses.replace(settings, context="llc")
    light = _entries(sigs, light_settings, cache, progress)
    meta.update(light_context="llc", light_entries=provenance(light))
    return light, meta
