"""Run benchmark cases: build the operands and candidates, check, time, derive figures.

``run_case`` returns one JSON-ready record per case (schema in sparsekern.bench.report)::

    {**case.to_dict(), "device", "dtype", "backend", "format_bytes", "stored", "nonzeros",
     "candidates": {name: candidate record (see sparsekern.bench.metrics)},
     "best_dense": name | None, "speedup": {...}, "bytes": {"dense", "sparse"},
     "live_columns": fraction, "bound": dense/sparse bytes, "memory_bound": bool,
     "gbps": achieved by sparsekern, "gflops": on stored values, "gflops_dense_equiv",
     "isa": CPU ISA path of the kernels ("avx512"/"avx2"/"portable"; None off the cpu backend),
     "cold": {"best_dense", "dense_s", "sparse_s", "speedup"} (CPU: every sample after a
             cache flush, as a layer of a model larger than the last-level cache; the
             candidates' "timing" is the warm, back-to-back figure),
     "wall_s": seconds the case took, weight setup included}

Every candidate's output is first compared with F.linear in float32 (float64 for float64
runs); a candidate whose relative error exceeds the dtype's tolerance is marked "wrong"
and not timed, so a fast wrong kernel never shows up as a speedup.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional

import torch
import torch.nn.functional as F

from . import bounds, metrics, operands
from .candidates import BETA_WARNING, MAX_REFERENCE_WORK, Candidate, as_nm, build_candidates
from .cases import Case
from ..timing.machine import extension_isa
from ..timing.timers import (BlockSettings, CacheFlusher, CudaTimerSettings, TimerSettings,
                             rotation_count, time_blocks, time_cuda)

#: Relative error ||y - y_ref|| / ||y_ref|| above which a candidate's result is wrong.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 2e-2, torch.bfloat16: 3e-2}


def tolerance(dtype: torch.dtype, device: str) -> float:
    """Allowed relative error; float32 on a GPU may use tf32 tensor cores (2e-3)."""
    if dtype == torch.float32 and device == "cuda":
        return 2e-3
    return TOLERANCE.get(dtype, 3e-2)


@dataclass
class RunSettings:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    timer: TimerSettings = field(default_factory=TimerSettings)
    cuda_timer: CudaTimerSettings = field(default_factory=CudaTimerSettings)
    max_reference_work: int = MAX_REFERENCE_WORK
    #: The same limit for a whole model's forward (summed over its reference-served layers).
    max_reference_work_model: int = MAX_REFERENCE_WORK * 2
    #: A peer whose call is predicted (from a smaller N on the same weight) to take longer
    #: than this many seconds is not run (torch.sparse can take tens of seconds per call).
    max_call_time: float = 2.0
    balance: Optional[float] = None      # flop per byte (machine.calibrate)
    seed: int = 0
    #: CPU: samples of the cold timing (cache flushed before each) of sparsekern and the
    #: dense baselines; 0 skips it.
    cold_reps: int = 5

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": dtype_name(self.dtype),
                "timer": self.timer.to_dict() if self.device != "cuda" else self.cuda_timer.to_dict(),
                "max_reference_work": self.max_reference_work,
                "max_reference_work_model": self.max_reference_work_model,
                "max_call_time": self.max_call_time, "balance": self.balance,
                "seed": self.seed, "cold_reps": self.cold_reps}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    den = float(ref.norm())
    num = float((out - ref).norm())
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def check(cand: Candidate, x: torch.Tensor, ref: torch.Tensor, tol: float) -> dict:
    """Run the candidate once; its record with status ok / skipped / failed / wrong.

    ``first_call_s`` holds the duration of that call (it includes one-time work).
    """
    rec = {"kind": cand.kind, "status": "ok", "reason": cand.reason, "rel_error": None,
           "timing": None, "first_call_s": None, "info": dict(cand.info)}
    if cand.fn is None:
        rec["status"] = "skipped"
        return rec
    try:
        arg = cand.prepare(x)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        t0 = time.perf_counter()
        raw = cand.fn(arg)
        sync()
        rec["first_call_s"] = time.perf_counter() - t0
        out = as_nm(raw, cand.out_layout)
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:300]
        rec.update(status="failed", reason=f"{type(e).__name__}: {first}")
        return rec
    if tuple(out.shape) != tuple(ref.shape):
        rec.update(status="wrong", reason=f"output shape {list(out.shape)}, expected {list(ref.shape)}")
        return rec
    err = rel_error(out, ref)
    rec["rel_error"] = err
    if not err <= tol:  # also catches NaN
        rec.update(status="wrong", reason=f"relative error {err:.3g} > {tol:g}")
    return rec


def _time_ok(cands: List[Candidate], records: dict, xs: List[torch.Tensor],
             s: RunSettings) -> None:
    ok = [c for c in cands if records[c.name]["status"] == "ok"]
    if s.device == "cuda":
        for c in ok:
            inputs = [c.prepare(x) for x in xs]
            records[c.name]["timing"] = time_cuda(c.fn, inputs, s.cuda_timer)
        return
    # In blocks (time_blocks): the candidates run on different thread pools (torch's,
    # OpenBLAS's, sparsekern's), and a sample right after another pool's call measured both.
    timings = time_blocks({c.name: (c.fn, c.prepare(xs[0])) for c in ok}, s.timer,
                          first_calls={c.name: records[c.name]["first_call_s"] for c in ok})
    for name, t in timings.items():
        records[name]["timing"] = t
    cold = [c for c in ok if c.kind in ("sparsekern", "dense")]
    if s.cold_reps > 0 and cold:
        timer = TimerSettings(min_time=0.0, min_reps=s.cold_reps, max_reps=s.cold_reps,
                              max_candidate_time=s.timer.max_candidate_time, warmup_time=0.0,
                              max_warmup_calls=1, sample_time=0.0)
        cold_t = time_blocks({c.name: (c.fn, c.prepare(xs[0])) for c in cold}, timer,
                             BlockSettings(rounds=min(2, s.cold_reps)),
                             before_sample=_flusher())
        for name, t in cold_t.items():
            records[name]["timing_cold"] = t


_FLUSHER: Optional[CacheFlusher] = None


def _flusher() -> CacheFlusher:
    global _FLUSHER
    if _FLUSHER is None:
        _FLUSHER = CacheFlusher()
    return _FLUSHER


def predicted_call_s(history: dict, name: str, N: int) -> Optional[float]:
    """Seconds per call of ``name`` at batch N, scaled linearly from its largest measured
    smaller-or-equal N on the same weight; None without history."""
    seen = [(n, t) for n, t in history.get(name, []) if n <= N]
    if not seen:
        return None
    n0, t0 = max(seen)
    return t0 * N / n0


def _too_slow(cands: List[Candidate], history: dict, N: int, limit: float) -> None:
    """Turn peers predicted to exceed ``limit`` seconds per call into skips. sparsekern (the
    subject) and the dense baselines (every speedup needs them) always run; their cost is
    bounded by the timer's max_candidate_time."""
    for c in cands:
        if c.kind != "peer":
            continue
        t = predicted_call_s(history, c.name, N)
        if c.fn is not None and t is not None and t > limit:
            c.fn = None
            c.reason = (f"predicted > {limit:g} s per call from a smaller N on this weight "
                        f"(max_call_time): not run")


def derive(rec: dict, elem: int, balance: Optional[float]) -> dict:
    """Add best dense, speedups, bytes, bound and rates to a case record (in place)."""
    M, K, N = rec["M"], rec["K"], rec["N"]
    cands = rec["candidates"]
    name, _ = metrics.best_dense(cands)
    rec["best_dense"] = name
    rec["speedup"] = metrics.speedups(cands)
    dense_b = bounds.dense_bytes(M, K, N, elem)
    sparse_b = bounds.sparse_bytes(rec["format_bytes"], M, K, N, elem,
                                   rec.get("live_columns", 1.0))
    rec["bytes"] = {"dense": dense_b, "sparse": sparse_b}
    rec["bound"] = bounds.bytes_bound(dense_b, sparse_b)
    rec["memory_bound"] = bounds.is_memory_bound(bounds.dense_flops(M, K, N), dense_b, balance)
    ts = metrics.median_s(cands.get(metrics.SPARSE, {}))
    rec["gbps"] = bounds.rate(sparse_b, ts)
    rec["gflops"] = bounds.rate(bounds.stored_flops(rec["stored"], N), ts)
    rec["gflops_dense_equiv"] = bounds.rate(bounds.dense_flops(M, K, N), ts)
    if any(c.get("timing_cold") for c in cands.values()):
        rec["cold"] = metrics.cold_figures(cands)
    return rec


class WeightCache:
    """The last weight and its conversions, reused by the next cases that share it."""

    def __init__(self):
        self.key, self.W, self.conversions, self.history = None, None, {}, {}

    def get(self, case: Case, s: RunSettings):
        """(W, its conversions dict); ``self.history`` then holds {candidate: [(N, s)]}."""
        key = (operands.weight_key(case, s.seed), s.dtype, s.device)
        if key != self.key:
            self.key, self.W, self.conversions, self.history = None, None, {}, {}
            self.W = operands.weight(case, s.dtype, torch.device(s.device), s.seed)
            self.key = key
        return self.W, self.conversions


def run_case(case: Case, s: RunSettings, weights: Optional[WeightCache] = None) -> dict:
    """Check and time every candidate of ``case``; returns its record (module docstring)."""
    t_start = time.perf_counter()
    dev = torch.device(s.device)
    weights = weights or WeightCache()
    W, conversions = weights.get(case, s)
    elem = W.element_size()
    n_sets = 1
    if dev.type == "cuda":
        l2 = torch.cuda.get_device_properties(dev).L2_cache_size
        n_sets = rotation_count(case.N * case.K * elem, l2)
    xs = operands.activation_sets(case, n_sets, s.dtype, dev, s.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=BETA_WARNING)
        cands = build_candidates(case, W, s.max_reference_work, conversions)
        _too_slow(cands, weights.history, case.N, s.max_call_time)
        ref_t = torch.float64 if s.dtype == torch.float64 else torch.float32
        ref = F.linear(xs[0].to(ref_t), W.to(ref_t))
        tol = tolerance(s.dtype, s.device)
        records = {c.name: check(c, xs[0], ref, tol) for c in cands}
        _time_ok(cands, records, xs, s)
    for name, r in records.items():
        t = metrics.median_s(r)
        if t is None and r["first_call_s"] is not None:
            t = r["first_call_s"]  # checked but not timed (wrong): still a cost estimate
        if t is not None:
            weights.history.setdefault(name, []).append((case.N, t))
    sk_info = cands[0].info
    rec = dict(case.to_dict(), device=s.device, dtype=dtype_name(s.dtype),
               backend=sk_info["backend"], format_bytes=sk_info["format_bytes"],
               stored=sk_info["stored"], nonzeros=sk_info["nonzeros"], candidates=records,
               isa=extension_isa() if sk_info["backend"] == "cpu" else None)
    rec["live_columns"] = (bounds.live_column_fraction(xs[0])
                           if case.layout == "csc" and case.activation == "relu" else 1.0)
    rec = derive(rec, elem, s.balance)
    rec["wall_s"] = time.perf_counter() - t_start  # the case's cost, weight setup included
    return rec


def run_cases(cases: Iterable[Case], s: RunSettings, progress: bool = True,
              on_result: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Run every case in order (tqdm progress bar on stderr); returns their records."""
    cases = list(cases)
    if s.device == "cpu":
        extension_isa()  # a bad SPARSEKERN_CPU_ISA: its ValueError now, not after a case's timing
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(cases), unit="case", desc=f"spmm {s.device}", dynamic_ncols=True)
        except ImportError:
            bar = None
    out = []
    weights = WeightCache()
    try:
        for case in cases:
            if bar is not None:
                bar.set_postfix_str(case.id, refresh=False)
            rec = run_case(case, s, weights)
            out.append(rec)
            if on_result is not None:
                on_result(rec)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out
