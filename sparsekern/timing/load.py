"""Is this machine busy, and how many threads should a measurement use?

One call, :func:`detect_load`, for everything that times on a shared machine (the
benchmark harness, the latency tables, the demo)::

    from sparsekern.timing import detect_load
    load = detect_load()                      # samples /proc for ~0.1 s
    load = detect_load(timings=samples)       # also judges the spread of your own timings
    print(load.summary())                     # one line: "machine quiet: ..." / "machine busy: ..."
    threads = args.threads or load.recommended_threads

What it looks at (Linux; elsewhere the fields it cannot read are None and count as quiet):

* ``others``: runnable threads of *other* processes, the median over the sampling window
  of ``procs_running`` in /proc/stat minus the sampling thread itself (the 1-minute load
  average, ``load_avg``, lags by a minute and counts this process too: reported, and used
  only when procs_running is unreadable);
* ``steal``: the fraction of CPU time the hypervisor gave to other guests over the window
  (/proc/stat ``steal``);
* ``timing_spread``: IQR / median of the caller's own per-call timings, when given, and
  ``quantized``: those timings are whole scheduler slices (see
  :func:`quantized_to_slices`), the signature of a thread that waited for a core.

Recommendation (:func:`recommend_threads`): the cores left after the other processes'
runnable threads and the stolen share, rounded to nearest, at least 1; halved again
(at least 1) when the caller's own timings are spread wide or quantized, since then a
thread of ours is already waiting for a core. ``busy`` is True when any signal exceeds its
threshold (``others >= 0.5``, ``steal >= 0.05``, spread > ``SPREAD_LIMIT``, quantized).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from .machine import usable_cpus

#: IQR / median of a caller's timings above which the timings are called unstable.
SPREAD_LIMIT = 0.25
#: Linux's scheduler hands out time in slices of a few ms; a call that takes whole slices
#: waited for a core (sched_min_granularity 3-4 ms, CONFIG_HZ 250 -> 4 ms ticks).
SLICE_S = 0.004


@dataclass
class LoadReport:
    """What :func:`detect_load` saw and what it recommends (see the module docstring)."""

    usable_cpus: int
    load_avg: Optional[float]
    others: Optional[float]
    steal: Optional[float]
    timing_spread: Optional[float] = None
    quantized: bool = False
    busy: bool = False
    recommended_threads: int = 1
    reasons: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a log or a report, e.g. ``machine busy: 1.0 other runnable
        threads on 2 usable CPUs (load average 2.31); recommended threads: 1``."""
        state = "busy" if self.busy else "quiet"
        why = "; ".join(self.reasons) if self.reasons else "no other load seen"
        la = "n/a" if self.load_avg is None else f"{self.load_avg:.2f}"
        return (f"machine {state}: {why} ({self.usable_cpus} usable CPUs, load average {la}); "
                f"recommended threads: {self.recommended_threads}")

    def to_dict(self) -> dict:
        return asdict(self)


def spread(samples: Sequence[float]) -> Optional[float]:
    """IQR / median of ``samples`` (None for fewer than 2 samples or a zero median)."""
    xs = sorted(float(x) for x in samples)
    if len(xs) < 2:
        return None
    med = statistics.median(xs)
    if med <= 0:
        return None
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return (q[2] - q[0]) / med


#: Rates no CPU core reaches (fp32 FLOP/s per thread, bytes/s for the whole machine): a
#: call's physical floor, given loosely. A timing in whole scheduler slices far above it
#: (sparsekern.timing.paired.FLOOR_FACTOR) waited for a core; one near it may be genuine.
PEAK_FLOPS_PER_THREAD = 512e9
PEAK_BYTES_PER_S = 2e12


def physical_floor_s(flops: float, nbytes: float, threads: int) -> float:
    """Seconds a call of ``flops`` floating-point operations moving ``nbytes`` cannot beat on
    ``threads`` threads: the longer of its FLOPs at PEAK_FLOPS_PER_THREAD x threads and its
    bytes at PEAK_BYTES_PER_S."""
    return max(float(flops) / (PEAK_FLOPS_PER_THREAD * max(1, int(threads))),
               float(nbytes) / PEAK_BYTES_PER_S)


#: Beyond this many slices every time is near some multiple: no longer a signature.
MAX_SLICES = 8


def quantized_to_slices(samples: Sequence[float], slice_s: float = SLICE_S,
                        tol: float = 0.05, share: float = 0.6) -> bool:
    """True when at least ``share`` of ``samples`` (seconds per call) are whole scheduler
    slices (``"12 ±0%" ms``): 1 to MAX_SLICES times ``slice_s``, within ``tol`` x
    ``slice_s`` of that multiple."""
    xs = [float(x) for x in samples]
    if len(xs) < 3:
        return False
    whole = 0
    for x in xs:
        k = round(x / slice_s)
        if 1 <= k <= MAX_SLICES and abs(x - k * slice_s) <= tol * slice_s:
            whole += 1
    return whole >= share * len(xs)


def recommend_threads(usable: int, others: Optional[float], steal: Optional[float] = None,
                      unstable: bool = False) -> int:
    """Threads for a measurement: the cores the other runnable threads and the stolen share
    leave, rounded to nearest, at least 1 (halved again when ``unstable``)."""
    free = float(usable) - float(others or 0.0) - float(usable) * float(steal or 0.0)
    threads = max(1, min(usable, int(free + 0.5)))
    if unstable:
        threads = max(1, threads // 2)
    return threads


Reader = Callable[[str], str]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _stat(reader: Reader) -> Tuple[Optional[int], Optional[Tuple[int, int]]]:
    """(procs_running, (steal ticks, total ticks)) from /proc/stat (None where unreadable)."""
    try:
        text = reader("/proc/stat")
    except OSError:
        return None, None
    running, ticks = None, None
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu" and len(parts) >= 9:
            vals = [int(v) for v in parts[1:]]
            ticks = (vals[7], sum(vals[:8]))  # user..steal; guest is inside user already
        elif parts and parts[0] == "procs_running" and len(parts) == 2:
            running = int(parts[1])
    return running, ticks


def _load_avg(reader: Reader) -> Optional[float]:
    try:
        return float(reader("/proc/loadavg").split()[0])
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return None


def detect_load(timings: Optional[Sequence[float]] = None, window_s: float = 0.1,
                samples: int = 5, usable: Optional[int] = None, reader: Reader = _read,
                sleep: Callable[[float], None] = time.sleep) -> LoadReport:
    """Sample the machine's load for ``window_s`` seconds (``samples`` reads of /proc/stat)
    and judge it, with the caller's own per-call ``timings`` (seconds) when given.

    ``usable``: CPUs this process may use (default: its affinity mask). ``reader`` and
    ``sleep`` are for tests (a fake /proc).
    """
    usable = int(usable or usable_cpus())
    load_avg = _load_avg(reader)
    running, first = _stat(reader)
    seen = [] if running is None else [running]
    last = first
    for _ in range(max(0, samples - 1)):
        sleep(window_s / max(1, samples - 1))
        r, last = _stat(reader)
        if r is not None:
            seen.append(r)
    if seen:
        others = max(0.0, statistics.median(seen) - 1.0)  # minus the thread reading /proc
    else:
        others = None if load_avg is None else max(0.0, load_avg - 1.0)
    steal = None
    if first is not None and last is not None and last[1] > first[1]:
        steal = max(0.0, (last[0] - first[0]) / (last[1] - first[1]))
    sp = spread(timings) if timings is not None else None
    quant = quantized_to_slices(timings) if timings is not None else False
    return judge(usable, load_avg, others, steal, sp, quant)


def judge(usable: int, load_avg: Optional[float], others: Optional[float],
          steal: Optional[float], timing_spread: Optional[float] = None,
          quantized: bool = False) -> LoadReport:
    """The :class:`LoadReport` of given observations (detect_load's decision step)."""
    reasons = []
    if others is not None and others >= 0.5:
        reasons.append(f"{others:.1f} other runnable threads")
    if steal is not None and steal >= 0.05:
        reasons.append(f"{steal:.0%} of CPU time stolen by the hypervisor")
    unstable = timing_spread is not None and timing_spread > SPREAD_LIMIT
    if unstable:
        reasons.append(f"own timings spread {timing_spread:.0%} (IQR/median > "
                       f"{SPREAD_LIMIT:.0%})")
    if quantized:
        reasons.append("own timings are whole scheduler slices (a thread waited for a core)")
    threads = recommend_threads(usable, others, steal, unstable or quantized)
    return LoadReport(usable, load_avg, others, steal, timing_spread, quantized,
                      bool(reasons), threads, reasons)


#: Average CPUs that other processes (and the hypervisor's other guests) may use during a
#: measurement of ours before it counts as taken on a busy machine.
OTHERS_CPU_LIMIT = 0.25


def _busy_ticks(reader: Reader, cpus: Sequence[int]) -> Optional[int]:
    """Busy ticks (everything but idle and iowait; steal included) of ``cpus`` in /proc/stat,
    None where unreadable."""
    try:
        text = reader("/proc/stat")
    except OSError:
        return None
    want = {f"cpu{c}" for c in cpus}
    total, found = 0, False
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in want and len(parts) >= 9:
            vals = [int(v) for v in parts[1:9]]
            total += sum(vals) - vals[3] - vals[4]
            found = True
    return total if found else None


class OthersMeter:
    """CPU time that other processes took from this process's CPUs over a stretch of its
    own work (``start()`` ... ``stop()``): a busy neighbour that came and went within a
    measurement, which a snapshot of the load after it misses.

    ``stop()`` returns the average number of CPUs the others used (their busy time on this
    process's CPUs, from /proc/stat, minus this process's own CPU time, over the wall
    time), or None where /proc/stat cannot say. ``reader``, ``clock`` and ``own_cpu_s``
    are for tests (a fake /proc and fake clocks).
    """

    def __init__(self, reader: Reader = _read, clock: Callable[[], float] = time.monotonic,
                 own_cpu_s: Optional[Callable[[], float]] = None,
                 cpus: Optional[Sequence[int]] = None, tick_s: Optional[float] = None):
        self.reader, self.clock = reader, clock
        self.own_cpu_s = own_cpu_s or (lambda: sum(os.times()[:2]))
        if cpus is None:
            try:
                cpus = sorted(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                cpus = range(os.cpu_count() or 1)
        self.cpus = list(cpus)
        self.tick_s = tick_s or 1.0 / os.sysconf("SC_CLK_TCK")
        self._start: Optional[Tuple[float, Optional[int], float]] = None

    def start(self) -> "OthersMeter":
        self._start = (self.clock(), _busy_ticks(self.reader, self.cpus), self.own_cpu_s())
        return self

    def stop(self) -> Optional[float]:
        if self._start is None:
            raise RuntimeError("OthersMeter.stop() before start()")
        t0, busy0, own0 = self._start
        wall, busy1 = self.clock() - t0, _busy_ticks(self.reader, self.cpus)
        if busy0 is None or busy1 is None or wall <= 0:
            return None
        others_s = (busy1 - busy0) * self.tick_s - (self.own_cpu_s() - own0)
        return max(0.0, others_s / wall)
