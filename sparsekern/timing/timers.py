"""Wall-clock timing of CPU callables and CUDA-event timing of GPU callables (shared by
sparsekern.auto and sparsekern.bench; re-exported as sparsekern.bench.timing).

CPU (``time_interleaved``): every candidate is warmed up, then the candidates are timed in
rounds, one sample of each per round (A B C A B C ...), so that a burst of load from other
processes hits all of them alike instead of one. A sample is ``inner`` back-to-back calls
(enough to make a sample >= ``sample_time``, so the clock's resolution does not matter);
each candidate gets enough samples to fill ``min_time`` (at least ``min_reps``, at most
``max_reps``, and no more than ``max_candidate_time`` of calls). Reported: the median time
per call and the inter-quartile range (run-to-run spread).

Interleaving leaves each candidate's data in whatever state the others left the caches
in, and each candidate's sample right after another's call, whose thread pool may still be
spinning (OpenBLAS's and torch's OpenMP threads do): fine among candidates on one pool, not
across libraries. Two variants fix that state instead:

* ``time_interleaved(..., before_sample=CacheFlusher())``: every sample starts with the
  caches full of other data (a model far larger than the last-level cache);
* ``time_blocks``: steady state, as in a model that fits in the last-level cache and runs
  back to back. Candidates take turns in blocks; a block first calls its candidate until
  warm (untimed: it can take a dozen calls before a weight that fits in L3 is served from
  it at full speed, and the last block's pool goes idle), then takes its samples, each
  after ``before_sample`` if given (the benchmark's cold figures: blocks + CacheFlusher).

GPU (``time_cuda``): CUDA events around each call, warm-up excluded, median of many
repeats; before every call L2 is flushed (a write over a buffer larger than L2) and the
input rotates through several sets, so neither weights nor inputs are served from L2.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple


@dataclass
class TimerSettings:
    """Knobs of the CPU timer (seconds)."""

    min_time: float = 0.2          # measured time per candidate to aim for
    min_reps: int = 3              # samples per candidate at least ...
    max_reps: int = 200            # ... and at most
    max_candidate_time: float = 3.0  # cap on measured time per candidate (slow calls)
    warmup_time: float = 0.02      # warm-up calls continue until this much time is spent
    max_warmup_calls: int = 5
    sample_time: float = 1e-3      # a sample lasts at least this long (inner calls)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


QUICK_TIMER = TimerSettings(min_time=0.05, min_reps=3, max_candidate_time=1.0,
                            warmup_time=0.01, max_warmup_calls=3)
FULL_TIMER = TimerSettings()


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending sequence (q in [0, 1])."""
    if not sorted_xs:
        raise ValueError("quantile of an empty sequence")
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> dict:
    """Median, quartiles, IQR, min, mean and count of per-call times (seconds)."""
    xs = sorted(float(s) for s in samples)
    if not xs:
        raise ValueError("no samples to summarize")
    q1, q3 = quantile(xs, 0.25), quantile(xs, 0.75)
    return {"median_s": statistics.median(xs), "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1,
            "min_s": xs[0], "mean_s": statistics.fmean(xs), "reps": len(xs)}


def plan(call_s: float, s: TimerSettings) -> Tuple[int, int]:
    """(inner calls per sample, samples) for a call that takes ``call_s`` seconds."""
    call_s = max(call_s, 1e-9)
    inner = max(1, math.ceil(s.sample_time / call_s))
    sample_s = inner * call_s
    reps = max(s.min_reps, math.ceil(s.min_time / sample_s))
    reps = min(reps, s.max_reps, max(1, math.floor(s.max_candidate_time / sample_s)))
    return inner, max(1, reps)


def round_robin(fns: Dict[str, Callable[[], object]], rounds: int,
                clock: Callable[[], float] = time.perf_counter,
                before_round: Optional[Callable[[], None]] = None) -> Dict[str, List[float]]:
    """Per-call seconds of each ``fn()``: ``rounds`` rounds, one call of every fn per round in
    dict order (A B C A B C ...), so load from other processes hits them alike. Warm-up is the
    caller's (call each fn first). ``before_round()`` runs untimed before each round (e.g. to
    set a thread count). The simplest timer here; the dev scripts under tools/ use it."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}")
    out: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        if before_round is not None:
            before_round()
        for name, fn in fns.items():
            t0 = clock()
            fn()
            out[name].append(clock() - t0)
    return out


@dataclass
class _Job:
    fn: Callable
    arg: object
    inner: int = 1
    reps: int = 0
    samples: List[float] = field(default_factory=list)


def _warm(fn, arg, s: TimerSettings, clock) -> float:
    """Call until warm; return the fastest warm call (seconds)."""
    spent, best = 0.0, math.inf
    for i in range(s.max_warmup_calls):
        t0 = clock()
        fn(arg)
        dt = clock() - t0
        spent += dt
        if i > 0 or dt > s.warmup_time:  # the first call (cold caches, lazy init) is discarded
            best = min(best, dt)
        if spent >= s.warmup_time and best < math.inf:
            break
    return best


def _estimate(job: "_Job", first_call: Optional[float], s: TimerSettings, clock) -> float:
    """A call's time for :func:`plan`: the caller's earlier call (``first_call`` seconds) when
    it is longer than ``warmup_time`` (it stands in for the warm-up), else :func:`_warm`."""
    if first_call is not None and first_call > s.warmup_time:
        return first_call
    return _warm(job.fn, job.arg, s, clock)


class CacheFlusher:
    """``before_sample`` hook: reads a buffer of ``nbytes`` (default twice the last-level
    cache), so a sample starts with none of the candidate's data cached.

    The buffer is written once, here, and only read by each flush, so the lines it leaves
    in the caches are clean, as the weights a real model streams through them are. A flush
    that wrote the buffer each time left dirty lines, and every line the timed call brought
    in first wrote one back: a 1536x384 layer at 17 tokens took 0.40 ms after such a flush
    against 0.28 ms after a clean one (2 threads, Zen 5, 32 MB L3), and the latency table's
    sum of MiniLM's layers predicted the model 35-45% slow.

    The flush runs on the thread pool the sampled call will use, as in a model, where a
    layer's weights come from memory while the pool is busy with the model's other ops: a
    NumPy argument (``before_sample(fn, arg)``) is flushed by a NumPy GEMV over the buffer
    (OpenBLAS's threads), anything else by a torch sum (torch's intra-op pool, which
    sparsekern's kernels use too). One pool for every candidate left its threads spinning
    beside the other library's call: NumPy's 4096² GEMV took 3.9 ms cold after a torch flush
    against 2.2 ms after a flush on plain threads (2 threads, Zen 5;
    bench/results/bench-timing-pools-2026-12-06).
    """

    def __init__(self, nbytes: Optional[int] = None):
        import numpy as np
        import torch
        from .machine import last_level_cache_bytes
        n = int(nbytes if nbytes is not None else 2 * last_level_cache_bytes())
        if n < 4:
            raise ValueError(f"CacheFlusher nbytes must be at least 4 (one float32), got "
                             f"{nbytes!r}")
        # written (not just allocated): an untouched buffer reads the shared zero page
        self.buffer = torch.ones(max(1, n // 4), dtype=torch.float32)
        self.nbytes = self.buffer.numel() * 4
        # the same memory as NumPy rows (the part past the last whole row is left out of
        # the GEMV: under 4 KB) times a vector of ones
        cols = min(1024, self.buffer.numel())
        self._rows = self.buffer.numpy()[: self.buffer.numel() // cols * cols].reshape(-1, cols)
        self._ones = np.ones(cols, dtype=np.float32)
        self._ndarray = np.ndarray

    def __call__(self, fn: Callable = None, arg=None) -> None:
        if isinstance(arg, self._ndarray):
            self._rows @ self._ones
        else:
            self.buffer.sum()


def time_interleaved(fns: Dict[str, Tuple[Callable, object]],
                     s: Optional[TimerSettings] = None,
                     clock: Callable[[], float] = time.perf_counter,
                     first_calls: Optional[Dict[str, float]] = None,
                     before_sample: Optional[Callable[[Callable, object], None]] = None
                     ) -> Dict[str, dict]:
    """Time each ``fn(arg)``; returns {name: summarize(...) + {"inner": calls per sample}}.

    fns: {name: (callable, its argument)}; the argument is prepared by the caller, so
    conversions (e.g. torch -> numpy) are not timed.
    first_calls: {name: seconds} of a call the caller already made (the correctness
    check); one longer than ``warmup_time`` stands in for the warm-up, so a slow
    candidate is not run once more just to warm it.
    before_sample: ``before_sample(fn, arg)`` runs untimed before every sample (e.g. a
    :class:`CacheFlusher`).
    """
    s = s or TimerSettings()
    first_calls = first_calls or {}
    jobs = {name: _Job(fn, arg) for name, (fn, arg) in fns.items()}
    for name, job in jobs.items():
        est = _estimate(job, first_calls.get(name), s, clock)
        job.inner, job.reps = plan(est, s)
    for r in range(max((j.reps for j in jobs.values()), default=0)):
        for job in jobs.values():
            if r >= job.reps:
                continue
            fn, arg, inner = job.fn, job.arg, job.inner
            if before_sample is not None:
                before_sample(fn, arg)
            t0 = clock()
            for _ in range(inner):
                fn(arg)
            job.samples.append((clock() - t0) / inner)
    return {name: dict(summarize(j.samples), inner=j.inner) for name, j in jobs.items()}


@dataclass
class BlockSettings:
    """Knobs of :func:`time_blocks` (seconds)."""

    rounds: int = 5                # blocks per candidate: turns spread over the whole run,
                                   # so a slow spell of the machine hits every candidate
    warm_calls: int = 12           # untimed calls at the start of every block, at least ...
    warm_time: float = 0.005       # ... and at least this long
    max_warm_time: float = 0.02    # ... but no longer than this (after the first call)


def warm_block(fn, arg, b: BlockSettings, clock=time.perf_counter) -> None:
    """Untimed calls: at least ``b.warm_calls`` and ``b.warm_time``, at most ``b.max_warm_time``
    (after the first call)."""
    t_end, t_cap, calls = clock() + b.warm_time, clock() + b.max_warm_time, 0
    while (calls < b.warm_calls or clock() < t_end) and (calls == 0 or clock() < t_cap):
        fn(arg)
        calls += 1


def time_blocks(fns: Dict[str, Tuple[Callable, object]], s: Optional[TimerSettings] = None,
                b: Optional[BlockSettings] = None,
                clock: Callable[[], float] = time.perf_counter,
                first_calls: Optional[Dict[str, float]] = None,
                before_sample: Optional[Callable[[Callable, object], None]] = None
                ) -> Dict[str, dict]:
    """Steady-state timing of each ``fn(arg)``: {name: summarize(...) + {"inner"}}.

    ``b.rounds`` rounds; in each, every candidate runs one block: warm-up calls (untimed;
    none for a call longer than ``b.max_warm_time``), then its share (1 / rounds) of the
    samples ``plan`` gives it under ``s``. Blocks, not one sample per candidate in turn,
    because libraries run on different thread pools (torch's OpenMP team, OpenBLAS's,
    sparsekern's own) whose threads spin for a while after a call: a sample taken right
    after another pool's left both pools' threads on the same cores (2 threads, Zen 5, BSR
    70% 768x3072 at N=32: sparsekern 0.81 ms after NumPy's call against 0.31-0.33 ms alone;
    bench/results/bench-timing-pools-2026-12-06). The warm-up calls let the other pool's
    threads go idle and bring the block's own back.
    first_calls, before_sample: as in :func:`time_interleaved` (a slow candidate's earlier
    call stands in for its first warm-up; ``before_sample(fn, arg)`` runs untimed before
    every sample, after the block's warm-up).
    """
    s, b = s or TimerSettings(), b or BlockSettings()
    if b.rounds < 1:
        raise ValueError(f"BlockSettings.rounds must be >= 1, got {b.rounds}")
    first_calls = first_calls or {}
    jobs = {name: _Job(fn, arg) for name, (fn, arg) in fns.items()}
    est = {}
    for name, job in jobs.items():
        est[name] = _estimate(job, first_calls.get(name), s, clock)
        job.inner, job.reps = plan(est[name], s)
    for r in range(b.rounds):
        for name, job in jobs.items():
            fn, arg, inner = job.fn, job.arg, job.inner
            # A call longer than the warm-up cap is its own warm-up (refilling the caches is a
            # small part of it): an untimed call per block would double a whole model's time.
            if est[name] <= b.max_warm_time:
                warm_block(fn, arg, b, clock)
            # this round's share of the samples, at least one
            share = max(1, job.reps // b.rounds + (1 if r < job.reps % b.rounds else 0))
            for _ in range(share):
                if before_sample is not None:
                    before_sample(fn, arg)
                t0 = clock()
                for _ in range(inner):
                    fn(arg)
                job.samples.append((clock() - t0) / inner)
    return {name: dict(summarize(j.samples), inner=j.inner) for name, j in jobs.items()}


# ----------------------------------------------------------------------------- GPU
@dataclass
class CudaTimerSettings:
    min_time: float = 0.1      # seconds of measured calls per candidate to aim for
    min_reps: int = 25
    max_reps: int = 500
    warmup_reps: int = 5
    flush_l2: bool = True

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def rotation_count(input_bytes: int, l2_bytes: int, most: int = 16) -> int:
    """Input sets to rotate through so that together they exceed twice the L2 size."""
    if input_bytes <= 0:
        return 2
    return int(min(most, max(2, math.ceil(2 * l2_bytes / input_bytes))))


def time_cuda(fn: Callable, inputs: Sequence[object], s: Optional[CudaTimerSettings] = None
              ) -> dict:
    """Median per-call time of ``fn(inputs[i % len(inputs)])`` measured with CUDA events."""
    import torch

    s = s or CudaTimerSettings()
    dev = torch.cuda.current_device()
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 64 << 20)
    scratch = torch.empty(max(2 * l2, 8 << 20), dtype=torch.int8, device="cuda")
    n_in = len(inputs)
    for i in range(s.warmup_reps):
        fn(inputs[i % n_in])
    torch.cuda.synchronize()
    # Estimate one call to size the repeat count.
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for i in range(3):
        fn(inputs[i % n_in])
    e1.record()
    torch.cuda.synchronize()
    est = max(e0.elapsed_time(e1) / 3e3, 1e-7)
    reps = int(min(s.max_reps, max(s.min_reps, math.ceil(s.min_time / est))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if s.flush_l2:
            scratch.zero_()
        starts[i].record()
        fn(inputs[i % n_in])
        ends[i].record()
    torch.cuda.synchronize()
    samples = [a.elapsed_time(b) / 1e3 for a, b in zip(starts, ends)]
    return dict(summarize(samples), inner=1, input_sets=n_in)
