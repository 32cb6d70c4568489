"""``python -m sparsekern.bench --contention``: how each layout degrades when a core is busy.

The harness starts its own busy processes (a spinning loop each), pinned with
``os.sched_setaffinity`` to the given cores (default: the last usable core), or left to
the scheduler (``busy_pinned=False``: one per given core, free to move), at a niceness of
``busy_nice`` (0; 19 is a background job's: a build, an indexer), each a spinning loop or, with
``busy_kind="torch"``, a torch job whose 2 intra-op threads do small matrix products (its
OpenMP threads, spinning between ops, held our team's threads off the cores for whole
scheduler slices where a single-threaded niced spinner yields at once), and keeps them
stopped (SIGSTOP) during quiet phases and running (SIGCONT) during loaded ones. For every
case (2048² and 4096², N = 1 and 64; dense, 2:4, BSR 32×32 at 90%, CSC at 90%) it runs
``phases`` rounds in alternation (quiet, quiet on one thread, loaded, ...); in each phase
each candidate runs a block in turn (untimed warm-up calls, then its samples, one call
each: A..A B..B C..C D..D), so no candidate is timed beside another library's spinning
threads.

Reported per case and candidate: quiet and loaded median and max (ms), loaded/quiet ratio
of the medians, and each sparse layout's time over the best dense (fastest of torch
F.linear and NumPy) quiet and loaded. Targets of issue 13: every layout's loaded median
<= 1.5x its quiet median, and every case that beats dense quiet still beats it loaded.
The one-thread phase gives each candidate's fair share (:func:`fair_share_ratio`): the
loaded/quiet that perfect balancing of our threads over the usable CPUs, beside the busy
cores, would reach. Where it is above 1.5x (a call whose two quiet threads run much more
than twice one thread's speed), no threading can meet the target on that machine, and the
table says so.

The quiet phases are only quiet when nothing else runs: :func:`quiet_warnings` says when
they were not (the machine busy before the run, by ``detect_load``; quiet samples spread
wide, in whole scheduler slices, or slower on every thread than on one).
"""
from __future__ import annotations

import os
import signal
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..timing.load import LoadReport, physical_floor_s
from ..timing.machine import torch_threads, usable_cpus
from ..timing.timers import BlockSettings, warm_block
from . import health, magnitude
from .bounds import dense_flops, stored_flops

#: (label, M, K) of the weights and the batches N of the contention cases.
SHAPES = (("2048²", 2048, 2048), ("4096²", 4096, 4096))
BATCHES = (1, 64)
#: (name, layout, blocksize, sparsity) of the sparse candidates.
LAYOUTS = (("2:4", "2:4", None, 0.5), ("bsr32x32 90%", "bsr", (32, 32), 0.9),
           ("csc 90%", "csc", None, 0.9))
DENSE = ("torch.F.linear", "numpy.matmul")
#: Targets (issue 13): loaded/quiet medians at most this.
MAX_DEGRADATION = 1.5


@dataclass
class ContentionSettings:
    """What a contention run does (see the module docstring)."""

    busy_cores: Tuple[int, ...] = ()     # () : the last usable core
    busy_nice: int = 0                   # niceness of the busy processes (0..19)
    busy_pinned: bool = True             # False: as many, unpinned (the scheduler places them)
    busy_kind: str = "spin"              # "spin" or "torch" (2-thread matrix products)
    phases: int = 2                      # quiet/loaded pairs per case
    calls: int = 20                      # calls per candidate per phase
    settle_s: float = 0.2                # wait after (un)pausing the busy processes
    shapes: Tuple[Tuple[str, int, int], ...] = SHAPES
    batches: Tuple[int, ...] = BATCHES
    seed: int = 0

    def __post_init__(self):
        if self.phases < 1 or self.calls < 3:
            raise ValueError(f"ContentionSettings needs phases >= 1 and calls >= 3, got "
                             f"phases={self.phases}, calls={self.calls}")
        if self.busy_kind not in BUSY_KINDS:
            raise ValueError(f"ContentionSettings.busy_kind must be one of {BUSY_KINDS}, got "
                             f"{self.busy_kind!r}")
        if len(set(self.busy_cores)) != len(self.busy_cores):
            raise ValueError(f"ContentionSettings.busy_cores must be distinct CPUs (one busy "
                             f"process per CPU), got {self.busy_cores}")
        if not 0 <= self.busy_nice <= 19:
            raise ValueError(f"ContentionSettings needs 0 <= busy_nice <= 19, got "
                             f"busy_nice={self.busy_nice}")


BUSY_KINDS = ("spin", "torch")


def _die_with_parent(parent: int) -> None:  # pragma: no cover - child process
    """SIGKILL this process when its parent dies, however it dies (a `kill` of the bench
    skips its context managers: the spinner was left burning a core). Linux only; a parent
    already gone before the request is caught by the pid check."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def _spin(core: Optional[int], nice: int = 0, kind: str = "spin",
          parent: Optional[int] = None) -> None:  # pragma: no cover - child process
    # Ctrl-C reaches the whole process group: the parent ends us (a traceback here would
    # bury its "interrupted" line).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    if core is not None:
        try:
            os.sched_setaffinity(0, {core})
        except (AttributeError, OSError):
            pass
    if nice:
        os.nice(nice)
    if kind == "torch":
        torch.set_num_threads(2)
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        while True:
            a @ b
    x = 0
    while True:
        x += 1


@contextmanager
def _sigint_blocked():
    """SIGINT held (not lost) inside: a child forked or spawned here inherits the mask, so a
    Ctrl-C before its _spin ignores SIGINT is no traceback of its own."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class BusyProcesses:
    """Spinning processes, one per core (pinned to it unless ``pinned=False``), at niceness
    ``nice``; ``pause()`` / ``resume()`` stop and continue them; a context manager that
    always kills them on exit."""

    def __init__(self, cores: Sequence[int], nice: int = 0, pinned: bool = True,
                 kind: str = "spin"):
        import multiprocessing as mp
        # A torch job is spawned: torch's OpenMP threads hang in a child forked after the
        # parent used them.
        fork = hasattr(os, "fork") and kind == "spin"
        ctx = mp.get_context("fork" if fork else "spawn")
        self.cores = list(cores)
        self.procs = [ctx.Process(target=_spin, args=(c if pinned else None, nice, kind,
                                                      os.getpid()),
                                  daemon=True) for c in self.cores]

    def __enter__(self):
        try:
            with _sigint_blocked():  # the children start with SIGINT held off (see _spin)
                for p in self.procs:
                    p.start()
            self.pause()
        except BaseException:  # a Ctrl-C while starting: no spinner is left behind
            self.__exit__()
            raise
        return self

    def _signal(self, sig) -> None:
        for p in self.procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def __exit__(self, *exc):
        self._signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM until continued
        for p in self.procs:
            if p.pid is None:  # never started (a Ctrl-C while starting)
                continue
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)
        return False


def default_busy_cores() -> Tuple[int, ...]:
    """The last CPU this process may use (one busy process, as in issue 13)."""
    try:
        return (max(os.sched_getaffinity(0)),)
    except (AttributeError, OSError):
        return (max(0, (os.cpu_count() or 1) - 1),)


def candidates(M: int, K: int, N: int, seed: int) -> Tuple[Dict[str, Callable], object]:
    """({name: fn}, x): best-dense candidates and the three layouts on one weight."""
    from ..formats import to_sparse
    from ..functional import linear
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=gen)
    x = torch.randn(N, K, generator=gen)
    fns: Dict[str, Callable] = {"torch.F.linear": lambda: F.linear(x, W)}
    Wn, xn = W.numpy().T, x.numpy()
    fns["numpy.matmul"] = lambda: xn @ Wn
    for name, layout, bs, sp in LAYOUTS:
        A = to_sparse(magnitude.prune(W, layout, sp, bs), layout=layout, blocksize=bs)
        fns[name] = (lambda A=A: linear(x, A))
    return fns, x


def run_phase(fns: Dict[str, Callable], calls: int,
              clock: Callable[[], float] = time.perf_counter,
              warm: Optional[BlockSettings] = None) -> Dict[str, List[float]]:
    """{name: [seconds per call]}: each candidate in turn runs one block, untimed calls
    (``warm``: at least 12 and 5 ms, at most 20 ms by default) and then ``calls`` timed ones.

    Blocks, not one call of each candidate in turn: the candidates run on different thread
    pools (torch's OpenMP team for F.linear and the kernels, OpenBLAS's for NumPy) whose
    threads spin for a while after a call, and a call right after another pool's ran beside
    those threads (bench/results/bench-timing-pools-2026-12-06; the earlier csc 4096² N=1
    misses of this benchmark came from the dense calls between,
    bench/results/contention-2026-12-06-zen5).
    """
    b = warm or BlockSettings()
    out: Dict[str, List[float]] = {n: [] for n in fns}
    for n, fn in fns.items():
        warm_block(lambda _: fn(), None, b, clock)
        for _ in range(calls):
            t0 = clock()
            fn()
            out[n].append(clock() - t0)
    return out


def fair_share_ratio(single_s: float, quiet_s: float, threads: int, busy: int,
                     cpus: Optional[int] = None) -> Optional[float]:
    """The loaded/quiet ratio a perfectly balanced call would reach: T = ``threads`` threads
    on C = ``cpus`` CPUs (default: those this process may use), B = ``busy`` of them running a
    busy process each, every core as fast as the quiet one-thread run (``single_s``).

    T + B <= C: our threads fit on the free cores and nothing is shared: 1.0. Else the C - B
    free cores run a thread each and the E = T + B - C threads left share a busy core half
    and half with its busy process (CFS shares a core equally): capacity = (C - B) + E / 2 =
    (T + C - B) / 2 cores, and the call takes single_s / capacity against quiet_s, at least
    1.0 (less CPU than quiet is not faster than quiet, which this one-thread model would
    predict for T threads that scale sublinearly). Above MAX_DEGRADATION the target cannot be met on that
    machine (e.g. a memory-bound call whose 2 quiet threads run 2.7x faster than one).
    None: a time <= 0, or T > C (our threads share cores even when quiet; the CLI refuses
    that)."""
    cpus = usable_cpus() if cpus is None else cpus
    busy = min(max(busy, 0), cpus)
    if quiet_s <= 0 or single_s <= 0 or not 1 <= threads <= cpus:
        return None
    if threads + busy <= cpus:
        return 1.0
    capacity = (threads + cpus - busy) / 2
    return max(1.0, (single_s / capacity) / quiet_s)


def busy_count(cores: Sequence[int], pinned: bool, usable: Sequence[int]) -> int:
    """B of :func:`fair_share_ratio`: the distinct busy cores among the ``usable`` CPUs (a
    busy process pinned elsewhere takes none of ours), or, unpinned, one core per process
    (the scheduler spreads them), at most all of them."""
    if pinned:
        return len(set(cores) & set(usable))
    return min(len(cores), len(usable))


def quartiles(samples: Sequence[float]) -> dict:
    """min, quartiles, median and IQR of ``samples`` (seconds): the plain run's timing keys,
    so that :mod:`.health` judges the quiet samples as it judges the plain run's."""
    xs = sorted(samples)
    q1, med, q3 = (statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1
                   else (xs[0],) * 3)
    return {"min_s": xs[0], "q1_s": q1, "median_s": med, "q3_s": q3, "iqr_s": q3 - q1}


def summarize_case(quiet: Dict[str, List[float]], loaded: Dict[str, List[float]],
                   single: Optional[Dict[str, List[float]]] = None, threads: int = 2,
                   busy: int = 1, cpus: Optional[int] = None) -> dict:
    """Per candidate: quiet/loaded median and max, loaded/quiet, the quiet samples' quartiles
    (``quiet_timing``); per sparse layout its time over the best dense (fastest median of
    DENSE) quiet and loaded. With ``single`` (quiet one-thread times): its median and the
    fair-share ratio (:func:`fair_share_ratio` on ``cpus`` CPUs)."""
    rows: Dict[str, dict] = {}
    for n in quiet:
        q, l = statistics.median(quiet[n]), statistics.median(loaded[n])
        rows[n] = {"quiet_median_s": q, "quiet_max_s": max(quiet[n]), "loaded_median_s": l,
                   "loaded_max_s": max(loaded[n]), "loaded_over_quiet": l / q if q > 0 else None,
                   "calls": len(quiet[n]), "quiet_timing": quartiles(quiet[n])}
        if single and single.get(n):
            one = statistics.median(single[n])
            rows[n]["single_thread_median_s"] = one
            rows[n]["fair_share_ratio"] = fair_share_ratio(one, q, threads, busy, cpus)
    dense = [n for n in DENSE if n in rows]
    best_q = min(dense, key=lambda n: rows[n]["quiet_median_s"]) if dense else None
    best_l = min(dense, key=lambda n: rows[n]["loaded_median_s"]) if dense else None
    for n, r in rows.items():
        if n in DENSE or best_q is None:
            continue
        r["over_dense_quiet"] = r["quiet_median_s"] / rows[best_q]["quiet_median_s"]
        r["over_dense_loaded"] = r["loaded_median_s"] / rows[best_l]["loaded_median_s"]
        r["targets_met"] = bool(r["loaded_over_quiet"] <= MAX_DEGRADATION and (
            r["over_dense_quiet"] >= 1.0 or r["over_dense_loaded"] < 1.0))
    return {"best_dense_quiet": best_q, "best_dense_loaded": best_l, "candidates": rows}


@contextmanager
def _threads(n: int):
    """torch's (and so our kernels') thread count set to ``n`` inside, and NumPy's BLAS
    threads too when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        blas = nullcontext()
    with blas, torch_threads(n):
        yield


#: The phases of a round, in order; "single" is quiet on one thread.
PHASES = ("quiet", "single", "loaded")


def _usable_ids() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def new_result(s: ContentionSettings) -> dict:
    """The JSON-ready results before any case, for :func:`run_into` to fill: a caller that
    holds it keeps the finished cases when a Ctrl-C ends the run. Call with torch's thread
    count set to the run's."""
    cores = s.busy_cores or default_busy_cores()
    usable = _usable_ids()
    model = {"threads": torch.get_num_threads(), "cpus": len(usable),
             "busy": busy_count(cores, s.busy_pinned, usable)}
    return {"busy_cores": list(cores), "settings": s.__dict__ | {"busy_cores": list(cores)},
            "fair_share_model": model, "cases": []}


def run_case(busy: BusyProcesses, s: ContentionSettings, shape: Tuple[str, int, int], N: int,
             model: dict) -> dict:
    """One case: ``s.phases`` rounds of PHASES, the busy processes running only in "loaded"."""
    label, M, K = shape
    fns, _ = candidates(M, K, N, s.seed)
    run_phase(fns, 3)  # warm-up: lazy repacks, first-touch of the weights
    acc = {state: {n: [] for n in fns} for state in PHASES}
    for _ in range(s.phases):
        for state in PHASES:
            (busy.resume if state == "loaded" else busy.pause)()
            time.sleep(s.settle_s)
            with _threads(1 if state == "single" else model["threads"]):
                for n, xs in run_phase(fns, s.calls).items():
                    acc[state][n] += xs
    busy.pause()
    return dict(summarize_case(acc["quiet"], acc["loaded"], acc["single"], model["threads"],
                               model["busy"], model["cpus"]), shape=label, M=M, K=K, N=N)


def run_into(res: dict, s: ContentionSettings,
             progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run every case quiet and loaded in alternation, appending each to ``res["cases"]``
    (``res`` from :func:`new_result`) as it finishes; the busy processes end however this
    ends (a KeyboardInterrupt included, which propagates)."""
    with BusyProcesses(res["busy_cores"], s.busy_nice, s.busy_pinned, s.busy_kind) as busy, \
            torch.inference_mode():
        for shape in s.shapes:
            for N in s.batches:
                res["cases"].append(run_case(busy, s, shape, N, res["fair_share_model"]))
                if progress is not None:
                    progress(f"{shape[0]} N={N} done")
    return res


def run(s: ContentionSettings, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run every case quiet and loaded in alternation; returns the JSON-ready results."""
    return run_into(new_result(s), s, progress)


#: A quiet median on all threads above this times the one-thread median: a thread of ours
#: waited for a core (on free cores, more threads are not 1.5x slower than one).
SLOWER_THAN_ONE_THREAD = 1.5


def _floor_s(case: dict, name: str, threads: int) -> float:
    """The candidate's physical floor (health.quantized's guard against calling a genuine
    one-slice call a stall): its FLOPs, and its stored values' bytes alone (a loose floor)."""
    M, K, N = case["M"], case["K"], case["N"]
    stored = int(M * K * {n: 1 - sp for n, _, _, sp in LAYOUTS}.get(name, 1.0))
    flops = dense_flops(M, K, N) if name in DENSE else stored_flops(stored, N)
    return physical_floor_s(flops, 4 * stored, threads)


def _spread_wide(case, name, r, threads) -> bool:
    t = r["quiet_timing"]
    return t["iqr_s"] > health.NOISY_SPREAD * t["median_s"]


def _sliced(case, name, r, threads) -> bool:
    return health.quantized(r["quiet_timing"], _floor_s(case, name, threads))


def _slower_than_one(case, name, r, threads) -> bool:
    one = r.get("single_thread_median_s")
    return threads > 1 and bool(one) and r["quiet_median_s"] > SLOWER_THAN_ONE_THREAD * one


def _quiet_checks(threads: int) -> tuple:
    """(what the quiet timings show, test) of :func:`quiet_warnings`."""
    return ((f"spread more than {health.NOISY_SPREAD:.0%} (IQR/median)", _spread_wide),
            ("are whole scheduler slices (a thread waited for a core)", _sliced),
            (f"on {threads} threads are over {SLOWER_THAN_ONE_THREAD}x the one-thread median "
             f"(a thread waited for a core)", _slower_than_one))


def _hit(case: dict, name: str, r: dict) -> str:
    one = r.get("single_thread_median_s")
    return (f"{case['shape']} N={case['N']} {name} {_ms(r['quiet_median_s'])} ms"
            + (f" (1 thread {_ms(one)} ms)" if one else ""))


def quiet_warnings(res: dict, load: Optional[LoadReport] = None, limit: int = 5) -> List[str]:
    """Why the quiet figures of ``res`` (a run's results) were not quiet, judged as the
    plain run judges its own (:func:`.health.warnings`): the load seen before the run, and
    per case and candidate quiet samples spread wide, in whole scheduler slices, or slower
    on every thread than on one. Empty when nothing says so."""
    out: List[str] = []
    if load is not None and load.busy:
        out.append(f"the machine was busy before the run ({load.summary()}): the quiet "
                   f"phases were not quiet; quiet medians, loaded/quiet and fair share do "
                   f"not measure what the busy processes cost")
    threads = res.get("fair_share_model", {}).get("threads", 1)
    rows = [(c, n, r) for c in res.get("cases", []) for n, r in c["candidates"].items()
            if "quiet_timing" in r]
    for what, test in _quiet_checks(threads):
        hits = [_hit(c, n, r) for c, n, r in rows if test(c, n, r, threads)]
        if hits:
            more = f" (and {len(hits) - limit} more)" if len(hits) > limit else ""
            out.append(f"{len(hits)} quiet timings {what}: {'; '.join(hits[:limit])}{more}; "
                       f"the quiet phases were not quiet")
    return out


def _ms(x: Optional[float]) -> str:
    return "—" if x is None else f"{x * 1e3:.3g}"


def _x(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.2f}x"


def _busy_text(doc: dict) -> str:
    c = doc["contention"]
    st = c.get("settings", {})
    where = (f"pinned to CPU(s) {c['busy_cores']}" if st.get("busy_pinned", True) else
             f"{len(c['busy_cores'])} unpinned")
    kind = " (torch, 2 threads each)" if st.get("busy_kind") == "torch" else ""
    return f"busy processes{kind} {where}" + (f", nice {st['busy_nice']}" if st.get("busy_nice")
                                              else "")


def _load_text(doc: dict) -> str:
    """The load seen before the run (doc["load"], a LoadReport dict), in words."""
    load = doc.get("load")
    if not load:
        return ""
    why = "; ".join(load.get("reasons") or []) or "no other load seen"
    return f"machine {'busy' if load.get('busy') else 'quiet'} before the run ({why}); "


def _fair_text(doc: dict) -> str:
    m = doc["contention"].get("fair_share_model")
    return "" if not m else (f" (here {m['threads']} thread{'' if m['threads'] == 1 else 's'} "
                             f"on {m['cpus']} CPUs, {m['busy']} busy)")


def _notes(doc: dict) -> List[str]:
    """The warnings and the interruption, as Markdown lines (none when neither)."""
    out = []
    if doc.get("warnings"):
        out += ["**Warnings:**", ""] + [f"- {w}" for w in doc["warnings"]] + [""]
    if doc.get("interrupted"):
        out += ["**Interrupted** (Ctrl-C): only the cases below were measured.", ""]
    return out


def markdown(doc: dict) -> str:
    """The tables of a contention document (one row per case x candidate)."""
    out = [f"# sparsekern contention benchmark", "",
           f"{doc.get('started', '')}; {doc.get('threads')} threads; {_busy_text(doc)}; "
           f"{_load_text(doc)}load average before "
           f"{doc.get('loadavg_before')}, after {doc.get('loadavg_after')}; kernels: "
           f"{doc.get('isa')} ({doc.get('git_commit', '?')}).", "",
           "Times are medians (and max) of per-call times in ms, quiet vs loaded phases in "
           "alternation. `loaded/quiet`: ratio of the medians (target <= "
           f"{MAX_DEGRADATION}x). `1 thread`: quiet median with one thread. `fair share`: "
           "the loaded/quiet a perfectly balanced call would reach: 1.00x when our threads "
           "and the busy cores fit the usable CPUs, else each thread beyond the free CPUs "
           "gets half a busy core, at the one-thread speed per core"
           f"{_fair_text(doc)} (above the target: the "
           "target cannot be met on this machine). `/dense`: time over the best dense of "
           "the same phase (< 1: faster than dense).", ""] + _notes(doc) + [
           "| shape | N | candidate | quiet ms | quiet max | 1 thread ms | loaded ms | "
           "loaded max | loaded/quiet | fair share | /dense quiet | /dense loaded | targets |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in doc["contention"]["cases"]:
        for n, r in c["candidates"].items():
            tgt = "" if "targets_met" not in r else ("met" if r["targets_met"] else "**missed**")
            fair = r.get("fair_share_ratio")
            if tgt == "**missed**" and fair is not None and fair > MAX_DEGRADATION:
                tgt += " (out of reach)"
            out.append(f"| {c['shape']} | {c['N']} | {n} | {_ms(r['quiet_median_s'])} | "
                       f"{_ms(r['quiet_max_s'])} | {_ms(r.get('single_thread_median_s'))} | "
                       f"{_ms(r['loaded_median_s'])} | "
                       f"{_ms(r['loaded_max_s'])} | {_x(r['loaded_over_quiet'])} | "
                       f"{_x(fair)} | "
                       f"{_x(r.get('over_dense_quiet'))} | {_x(r.get('over_dense_loaded'))} | "
                       f"{tgt} |")
    return "\n".join(out) + "\n"
