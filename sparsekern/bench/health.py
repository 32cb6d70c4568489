"""Warnings about a run's conditions: a busy machine, timings quantized to scheduler slices,
wide spreads, end-to-end speedups past their Amdahl bound. Printed by ``python -m
sparsekern.bench``, stored under ``"warnings"`` in the results JSON and listed in the Markdown
report."""
from __future__ import annotations

from typing import List, Optional

from ..timing.load import LoadReport, physical_floor_s, quantized_to_slices
from ..timing.paired import FLOOR_FACTOR
from .bounds import dense_flops, stored_flops

#: A timed candidate whose IQR exceeds this fraction of its median is called noisy.
NOISY_SPREAD = 0.3


def _timings(doc: dict):
    for case in doc.get("cases", []):
        for name, cand in case.get("candidates", {}).items():
            t = cand.get("timing")
            if cand.get("status") == "ok" and isinstance(t, dict) and t.get("median_s"):
                yield case, name, cand, t


def floor_s(case: dict, cand: dict, threads: int) -> Optional[float]:
    """The candidate's physical floor (sparsekern.timing.load.physical_floor_s): a dense
    candidate's FLOPs and bytes are the dense layer's, any other's the stored entries' and
    the sparse bytes. None when the case lacks the figures."""
    try:
        M, K, N = int(case["M"]), int(case["K"]), int(case["N"])
        b = case["bytes"]
        if cand.get("kind") == "dense":
            return physical_floor_s(dense_flops(M, K, N), b["dense"], threads)
        return physical_floor_s(stored_flops(int(case["stored"]), N), b["sparse"], threads)
    except (KeyError, TypeError, ValueError):
        return None


def quantized(t: dict, floor: Optional[float] = None) -> bool:
    """The timing's min, quartiles and median are whole scheduler slices (e.g. "12 ±0%")
    and, when the candidate's physical ``floor`` is known, more than FLOOR_FACTOR times it:
    a genuine call of about one slice (a 4.0 ms dense GEMM) is not a thread that waited."""
    xs = [t.get(k) for k in ("min_s", "q1_s", "median_s", "q3_s")]
    if not all(x is not None for x in xs) or not quantized_to_slices(xs, share=1.0):
        return False
    return floor is None or t["median_s"] > FLOOR_FACTOR * floor


def warnings(doc: dict, load: Optional[LoadReport] = None, limit: int = 5) -> List[str]:
    """Human-readable warnings for ``doc`` (a results document) and the load seen at start."""
    out: List[str] = []
    if load is not None and load.busy:
        out.append(f"the machine was busy at the start ({load.summary()}): timings are "
                   f"noisier and sparse kernels may lose more than dense to the contention")
    threads = _threads(doc)
    sliced = [f"{case.get('id', '?')} {name}: {t['median_s'] * 1e3:.3g} ms ±"
              f"{100 * t['iqr_s'] / (2 * t['median_s']):.0f}%"
              for case, name, cand, t in _timings(doc)
              if quantized(t, floor_s(case, cand, threads))]
    if sliced:
        more = f" (and {len(sliced) - limit} more)" if len(sliced) > limit else ""
        out.append(f"{len(sliced)} timings are whole scheduler slices (a thread waited for a "
                   f"core; the figure measures the machine's load, not the kernel): "
                   + "; ".join(sliced[:limit]) + more)
    noisy = [f"{case.get('id', '?')} {name}" for case, name, _, t in _timings(doc)
             if t["iqr_s"] > NOISY_SPREAD * t["median_s"]]
    noisy += [f"{_model_id(row)} {side}" for row, side, t in _model_timings(doc)
              if (t.get("iqr_s") or 0.0) > NOISY_SPREAD * t["median_s"]]
    if noisy:
        more = f" (and {len(noisy) - limit} more)" if len(noisy) > limit else ""
        out.append(f"{len(noisy)} timings spread more than {NOISY_SPREAD:.0%} (IQR/median): "
                   + ", ".join(noisy[:limit]) + more)
    beyond = [f"{_model_id(row)}: {row['speedup']:.3g}x > {row['amdahl_limit']:.3g}x"
              for row in doc.get("models", []) if _beyond_amdahl(row)]
    if beyond:
        more = f" (and {len(beyond) - limit} more)" if len(beyond) > limit else ""
        out.append(f"{len(beyond)} model speedups exceed what their Linear layers allow (the "
                   f"speedup if those layers took no time at all): their timings measure the "
                   f"machine's load, not the model: " + "; ".join(beyond[:limit]) + more)
    return out


def _model_id(row: dict) -> str:
    return f"{row.get('model', '?')} {row.get('variant', '?')} batch {row.get('batch', '?')}"


def _model_timings(doc: dict):
    """(row, "dense" | "sparse", timing) of every measured end-to-end model row."""
    for row in doc.get("models", []):
        if row.get("status") != "ok":
            continue
        for side in ("dense", "sparse"):
            t = row.get(side)
            if isinstance(t, dict) and t.get("median_s"):
                yield row, side, t


#: A model row's speedup may pass its Amdahl bound by this factor (timing noise) before it is
#: called impossible.
AMDAHL_SLACK = 1.1


def _beyond_amdahl(row: dict) -> bool:
    """Whether a measured model row's speedup exceeds AMDAHL_SLACK times its Amdahl bound
    (1 / (1 - the dense model's Linear share)): no kernel can make that happen."""
    s, bound = row.get("speedup"), row.get("amdahl_limit")
    return (row.get("status") == "ok" and isinstance(s, (int, float))
            and isinstance(bound, (int, float)) and bound > 0 and s > AMDAHL_SLACK * bound)


def _threads(doc: dict) -> int:
    """The run's thread count (its settings, else the machine record), at least 1."""
    for t in (doc.get("settings", {}).get("threads"),
              doc.get("machine", {}).get("threads", {}).get("torch_threads")):
        if isinstance(t, int) and t >= 1:
            return t
    return 1
