"""Time candidates in alternation with a reference, and say which timings can be trusted.

The latency tables (sparsekern.auto) need, per candidate, its time *relative to the dense
layer* on this machine, and need to know when that ratio is noise. :func:`time_paired`:

1. every job is warmed up and planned: ``inner`` back-to-back calls per sample, enough to
   last ``sample_time`` (one call when it is longer);
2. ``rounds`` rounds; in each, every candidate's sample directly follows a sample of the
   reference (R A R B R C ...), so a burst of load hits a pair, not one side of it. The
   round's ratio is candidate / the reference sample just before it;
3. a candidate is **stable** when the IQR of its per-round ratios is at most
   ``tolerance`` x their median, and (warm context) its samples are not whole scheduler
   slices far above the fastest it can be — its fastest warm call, or, when the caller
   gives ``bound_ratio`` (e.g. the bytes it moves over the reference's), that fraction of
   the reference's fastest call: a thread of it waited for a core, the ``"12 ±0%"``
   pattern (:func:`sparsekern.timing.load.quantized_to_slices`);
4. unstable candidates are re-timed (fresh rounds, still paired) up to ``retries`` times;
   one that stays unstable is returned with ``stable=False`` and the reason: the caller
   must not treat its figures as a measurement.

Everything takes a ``clock`` so the logic is tested with fake clocks, no real time.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from .load import quantized_to_slices
from .timers import TimerSettings, _warm, summarize

Job = Tuple[Callable, object]


@dataclass(frozen=True)
class PairedSettings:
    """Knobs of :func:`time_paired` (seconds)."""

    rounds: int = 5              # paired samples per candidate per attempt
    tolerance: float = 0.2       # a ratio's IQR / median above this is unstable
    retries: int = 1             # fresh attempts for unstable candidates
    sample_time: float = 5e-4    # a sample lasts at least this long (inner calls) ...
    max_inner: int = 200         # ... with at most this many calls
    warm_calls: int = 1          # untimed calls before each sample (warm context)
    warmup_time: float = 0.005   # initial warm-up of each job (see timers._warm)
    max_warmup_calls: int = 3
    slice_factor: float = 3.0    # samples this many times the fastest warm call, in whole
                                 # scheduler slices, are a thread waiting for a core

    def __post_init__(self):
        if self.rounds < 3:
            raise ValueError(f"PairedSettings.rounds must be >= 3 (a spread needs samples), "
                             f"got {self.rounds}")
        if not 0.0 < self.tolerance < 1.0:
            raise ValueError(f"PairedSettings.tolerance must be in (0, 1), got "
                             f"{self.tolerance!r}")
        if self.retries < 0:
            raise ValueError(f"PairedSettings.retries must be >= 0, got {self.retries}")


def _iqr_over_median(xs: List[float]) -> float:
    ys = sorted(xs)
    med = statistics.median(ys)
    if med <= 0:
        return math.inf
    q = statistics.quantiles(ys, n=4, method="inclusive")
    return (q[2] - q[0]) / med


def _sample(fn, arg, inner: int, warm_calls: int, before, clock) -> float:
    if before is not None:
        before(fn, arg)
    for _ in range(warm_calls):
        fn(arg)
    t0 = clock()
    for _ in range(inner):
        fn(arg)
    return (clock() - t0) / inner


def _plan_inner(est: float, s: PairedSettings) -> int:
    return int(min(s.max_inner, max(1, math.ceil(s.sample_time / max(est, 1e-9)))))


def verdict(ratios: List[float], samples: List[float], fastest: float, s: PairedSettings,
            check_slices: bool = True) -> Tuple[bool, str]:
    """(stable, why not) of one candidate's per-round ``ratios`` and ``samples``."""
    sp = _iqr_over_median(ratios)
    if sp > s.tolerance:
        return False, (f"ratio to the reference spread {sp:.0%} (IQR/median) over "
                       f"{len(ratios)} paired rounds, above the {s.tolerance:.0%} tolerance")
    med = statistics.median(samples)
    if (check_slices and math.isfinite(fastest) and med > s.slice_factor * fastest
            and quantized_to_slices(samples)):
        return False, (f"samples are whole scheduler slices ({med * 1e3:.3g} ms) while it can "
                       f"take {fastest * 1e3:.3g} ms (fastest warm call or bound): a thread "
                       f"waited for a core")
    return True, ""


def _attempt(names: List[str], jobs: Dict[str, Job], ref: str, inner: Dict[str, int],
             s: PairedSettings, clock, before, warm_calls: int
             ) -> Tuple[Dict[str, List[float]], Dict[str, List[float]], List[float]]:
    """One attempt: (samples, ratios) per candidate and the reference's samples."""
    samples = {n: [] for n in names}
    ratios = {n: [] for n in names}
    ref_samples: List[float] = []
    rfn, rarg = jobs[ref]
    for _ in range(s.rounds):
        for n in names:
            tr = _sample(rfn, rarg, inner[ref], warm_calls, before, clock)
            fn, arg = jobs[n]
            tc = _sample(fn, arg, inner[n], warm_calls, before, clock)
            ref_samples.append(tr)
            samples[n].append(tc)
            ratios[n].append(tc / tr if tr > 0 else math.inf)
    return samples, ratios, ref_samples


def time_paired(jobs: Dict[str, Job], reference: str, s: Optional[PairedSettings] = None,
                clock: Callable[[], float] = time.perf_counter,
                before_sample: Optional[Callable[[Callable, object], None]] = None,
                bound_ratio: Optional[Dict[str, float]] = None) -> Dict[str, dict]:
    """Time every job of ``jobs`` {name: (fn, arg)} paired with ``jobs[reference]``.

    ``before_sample(fn, arg)`` runs untimed before every sample (e.g. a CacheFlusher: a
    cold context; then no warm calls precede a sample and the slice check is off).
    ``bound_ratio`` {name: r}: the job cannot take less than r x the reference's fastest
    call (a physical bound, such as bytes moved); used by the slice check.
    Returns {name: summarize(samples) + {"inner", "ratio" (median per-round ratio to the
    reference), "ratio_spread" (IQR/median), "rounds", "attempts", "stable", "why"}};
    the reference's record summarizes all its samples (``stable`` from their spread).
    """
    s = s or PairedSettings()
    if reference not in jobs:
        raise ValueError(f"reference {reference!r} is not among the jobs {list(jobs)}")
    warm = TimerSettings(warmup_time=s.warmup_time, max_warmup_calls=s.max_warmup_calls)
    fastest = {n: _warm(fn, arg, warm, clock) for n, (fn, arg) in jobs.items()}
    floor = dict(fastest)
    for n, r in (bound_ratio or {}).items():
        if n in floor and r > 0:
            floor[n] = min(floor[n], r * fastest[reference])
    cold = before_sample is not None
    inner = {n: 1 if cold else _plan_inner(t, s) for n, t in fastest.items()}
    warm_calls = 0 if cold else s.warm_calls
    todo = [n for n in jobs if n != reference]
    out: Dict[str, dict] = {}
    ref_all: List[float] = []
    for attempt in range(1, s.retries + 2):
        if not todo:
            break
        samples, ratios, ref_samples = _attempt(todo, jobs, reference, inner, s, clock,
                                                before_sample, warm_calls)
        ref_all += ref_samples
        still = []
        for n in todo:
            ok, why = verdict(ratios[n], samples[n], floor[n], s, check_slices=not cold)
            out[n] = dict(summarize(samples[n]), inner=inner[n],
                          ratio=statistics.median(ratios[n]),
                          ratio_spread=_iqr_over_median(ratios[n]), rounds=len(ratios[n]),
                          attempts=attempt, stable=ok, why=why)
            if not ok:
                still.append(n)
        todo = still
    if not ref_all:  # only the reference: time it alone, in rounds
        rfn, rarg = jobs[reference]
        ref_all = [_sample(rfn, rarg, inner[reference], warm_calls, before_sample, clock)
                   for _ in range(s.rounds)]
    ref_sp = _iqr_over_median(ref_all)
    out[reference] = dict(summarize(ref_all), inner=inner[reference], ratio=1.0,
                          ratio_spread=0.0, rounds=len(ref_all), attempts=1,
                          stable=ref_sp <= s.tolerance,
                          why="" if ref_sp <= s.tolerance else
                          f"its own samples spread {ref_sp:.0%} (IQR/median)")
    return {n: out[n] for n in jobs}
