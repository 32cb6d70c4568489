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
   The reference gets the same slice check: when its samples are whole slices, every
   candidate of that attempt is unstable (their ratios all rest on a stalled reference);
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

#: A reference whose samples are whole scheduler slices more than this many times its
#: physical floor (``reference_floor``, given loosely: peak rates no machine reaches) waited
#: for a core, even when every call of it did (warm-up included).
FLOOR_FACTOR = 10.0
#: A reference whose median sample lasts at least STALL_MIN_S and more than STALL_FACTOR
#: times its physical floor waited for a core whatever the samples' pattern: a scheduler's
#: slices need not be 4 ms (EEVDF hands out ~1.5-3 ms, so stalls of 6.1 ms are no multiple
#: of SLICE_S). A quiet dense call runs 5-60x its floor (4096x4096 and 11008x4096 GEMVs on
#: one thread, warm: 37x and 57x; from memory at 10 GB/s: ~200x); the stall that made a
#: 0.02 ms Linear take 6.1 ms was 3800x.
STALL_MIN_S = 1e-3
STALL_FACTOR = 1000.0
#: The same factor on a machine seen busy (the caller's choice, PairedSettings.stall_factor):
#: there a 2-thread dense call whose second thread waits for a core every call is stalled
#: on every sample alike, and a candidate paired with it too, so their ratio looks stable
#: (MiniLM's 384x1536 layer at 16 tokens under a spinner: dense 11.4 ms, 620x its floor,
#: against 0.174 ms quiet). False alarms cost a measurement, not a wrong choice: the point
#: is then unstable (re-timed, then left to the bytes-bound model or to dense).
BUSY_STALL_FACTOR = 100.0


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
    stall_factor: float = STALL_FACTOR  # a reference sample of >= STALL_MIN_S this many
                                        # times its physical floor waited for a core

    def __post_init__(self):
        if self.rounds < 3:
            raise ValueError(f"PairedSettings.rounds must be >= 3 (a spread needs samples), "
                             f"got {self.rounds}")
        if not 0.0 < self.tolerance < 1.0:
            raise ValueError(f"PairedSettings.tolerance must be in (0, 1), got "
                             f"{self.tolerance!r}")
        if self.retries < 0:
            raise ValueError(f"PairedSettings.retries must be >= 0, got {self.retries}")
        if not self.stall_factor > 1.0:
            raise ValueError(f"PairedSettings.stall_factor must be > 1, got "
                             f"{self.stall_factor!r}")


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


def reference_verdict(samples: List[float], fastest: float, s: PairedSettings,
                      check_spread: bool = True, floor: float = math.inf
                      ) -> Tuple[bool, str]:
    """(stable, why not) of the reference's own ``samples``: their spread (``check_spread``),
    and whether they are whole scheduler slices far above ``fastest`` (its fastest warm call or
    ``floor`` x FLOOR_FACTOR, a physical floor given loosely; inf: no check). A reference
    that waited for a core (e.g. a 2-thread BLAS call whose second thread was descheduled)
    inflates every candidate's ratio alike, so the ratios can agree and still be wrong."""
    sp = _iqr_over_median(samples)
    if check_spread and sp > s.tolerance:
        return False, f"its own samples spread {sp:.0%} (IQR/median)"
    med = statistics.median(samples)
    if med >= STALL_MIN_S and med > s.stall_factor * floor:
        return False, (f"its samples take {med * 1e3:.3g} ms, {med / floor:.0f}x its physical "
                       f"floor ({floor * 1e3:.3g} ms): a thread waited for a core")
    far = med > s.slice_factor * fastest or med > FLOOR_FACTOR * floor
    if far and quantized_to_slices(samples):
        return False, (f"its samples are whole scheduler slices ({med * 1e3:.3g} ms) while it "
                       f"can take {min(fastest, floor) * 1e3:.3g} ms (fastest warm call or "
                       f"physical floor): a thread waited for a core")
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
                bound_ratio: Optional[Dict[str, float]] = None,
                reference_floor: Optional[float] = None) -> Dict[str, dict]:
    """Time every job of ``jobs`` {name: (fn, arg)} paired with ``jobs[reference]``.

    ``before_sample(fn, arg)`` runs untimed before every sample (e.g. a CacheFlusher: a
    cold context; then no warm calls precede a sample and the slice check is off).
    ``bound_ratio`` {name: r}: the job cannot take less than r x the reference's fastest
    call (a physical bound, such as bytes moved); used by the slice check.
    ``reference_floor`` (seconds): the reference cannot take less (e.g. its FLOPs at a peak
    no machine reaches); samples that are whole slices FLOOR_FACTOR times above it mean a
    reference whose every call, warm-up included, waited for a core.
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
    # A cold sample is slower than any warm call: in a cold context only the physical floor
    # may judge the reference's slices.
    ref_fast = math.inf if cold else fastest[reference]
    ref_floor = reference_floor if reference_floor and reference_floor > 0 else math.inf
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
        # per attempt, slices only: a burst that hits a pair leaves its ratio alone
        ref_ok, ref_why = reference_verdict(ref_samples, ref_fast, s, False, ref_floor)
        still = []
        for n in todo:
            ok, why = verdict(ratios[n], samples[n], floor[n], s, check_slices=not cold)
            if ok and not ref_ok:  # every ratio of this attempt is over a stalled reference
                ok, why = False, f"the reference {reference!r}: {ref_why}"
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
    ref_ok, ref_why = reference_verdict(ref_all, ref_fast, s, True, ref_floor)
    out[reference] = dict(summarize(ref_all), inner=inner[reference], ratio=1.0,
                          ratio_spread=0.0, rounds=len(ref_all), attempts=1,
                          stable=ref_ok, why=ref_why)
    return {n: out[n] for n in jobs}
