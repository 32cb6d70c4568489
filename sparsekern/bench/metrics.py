"""Speedup arithmetic over the candidates of one case (pure functions on plain dicts).

A candidate record (what the JSON holds under ``case["candidates"][name]``)::

    {"kind": "sparsekern" | "dense" | "peer",
     "status": "ok" | "skipped" | "failed" | "wrong",   # only "ok" has a timing
     "reason": str, "rel_error": float | None,
     "timing": {"median_s", "q1_s", "q3_s", "iqr_s", "min_s", "mean_s", "reps", "inner"} | None,
     "info": {...}}

speedup over X = median time of X / median time of sparsekern (> 1: sparsekern is faster).
"Best dense" is the dense candidate with the smallest median, measured in the same run.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Tuple

SPARSE = "sparsekern"
KINDS = ("sparsekern", "dense", "peer")
STATUSES = ("ok", "skipped", "failed", "wrong")


def median_s(cand: dict) -> Optional[float]:
    """The candidate's median seconds per call, or None when it was not timed."""
    if cand.get("status") != "ok" or not cand.get("timing"):
        return None
    t = cand["timing"].get("median_s")
    return float(t) if t is not None and t > 0 else None


def best_dense(cands: Dict[str, dict]) -> Tuple[Optional[str], Optional[float]]:
    """(name, seconds) of the fastest timed dense candidate, (None, None) if none."""
    best = (None, None)
    for name, c in sorted(cands.items()):
        t = median_s(c) if c.get("kind") == "dense" else None
        if t is not None and (best[1] is None or t < best[1]):
            best = (name, t)
    return best


def speedup(other_s: Optional[float], sparse_s: Optional[float]) -> Optional[float]:
    if other_s is None or sparse_s is None or sparse_s <= 0:
        return None
    return other_s / sparse_s


def speedups(cands: Dict[str, dict], sparse: str = SPARSE) -> Dict[str, Optional[float]]:
    """{"best_dense": x, <each dense name>: x, <each peer name>: x} for one case."""
    ts = median_s(cands[sparse]) if sparse in cands else None
    out = {"best_dense": speedup(best_dense(cands)[1], ts)}
    for name, c in sorted(cands.items()):
        if c.get("kind") in ("dense", "peer"):
            out[name] = speedup(median_s(c), ts)
    return out


def geomean(xs: Iterable[Optional[float]]) -> Optional[float]:
    """Geometric mean of the positive values (None and non-positive skipped); None if empty."""
    vals = [float(x) for x in xs if x is not None and x > 0 and math.isfinite(x)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def amdahl(linear_share: float, layer_speedup: float) -> float:
    """Whole-model speedup when a ``linear_share`` of the time gets ``layer_speedup``."""
    if not 0.0 <= linear_share <= 1.0:
        raise ValueError(f"linear_share must be in [0, 1]; got {linear_share}")
    if layer_speedup <= 0:
        raise ValueError(f"layer_speedup must be > 0; got {layer_speedup}")
    return 1.0 / ((1.0 - linear_share) + linear_share / layer_speedup)


def amdahl_limit(linear_share: float) -> float:
    """Whole-model speedup if the Linear layers took no time at all."""
    if not 0.0 <= linear_share <= 1.0:
        raise ValueError(f"linear_share must be in [0, 1]; got {linear_share}")
    return math.inf if linear_share >= 1.0 else 1.0 / (1.0 - linear_share)


def cold_figures(cands: Dict[str, dict], sparse: str = SPARSE) -> dict:
    """{"best_dense", "dense_s", "sparse_s", "speedup"} from the cold timings
    (``timing_cold``: every sample after a cache flush) of the sparse and dense candidates."""
    def cold(c):
        t = (c.get("timing_cold") or {}).get("median_s")
        return float(t) if t is not None and t > 0 else None
    best = (None, None)
    for name, c in sorted(cands.items()):
        t = cold(c) if c.get("kind") == "dense" else None
        if t is not None and (best[1] is None or t < best[1]):
            best = (name, t)
    ts = cold(cands[sparse]) if sparse in cands else None
    return {"best_dense": best[0], "dense_s": best[1], "sparse_s": ts,
            "speedup": speedup(best[1], ts)}
