"""Warnings about a run's conditions: a busy machine, timings quantized to scheduler slices,
wide spreads. Printed by ``python -m sparsekern.bench``, stored under ``"warnings"`` in
the results JSON and listed in the Markdown report."""
from __future__ import annotations

from typing import List, Optional

from ..timing.load import LoadReport, quantized_to_slices

#: A timed candidate whose IQR exceeds this fraction of its median is called noisy.
NOISY_SPREAD = 0.3


def _timings(doc: dict):
    for case in doc.get("cases", []):
        for name, cand in case.get("candidates", {}).items():
            t = cand.get("timing")
            if cand.get("status") == "ok" and isinstance(t, dict) and t.get("median_s"):
                yield case.get("id", "?"), name, t


def quantized(t: dict) -> bool:
    """The timing's min, quartiles and median are whole scheduler slices (e.g. "12 ±0%")."""
    xs = [t.get(k) for k in ("min_s", "q1_s", "median_s", "q3_s")]
    return all(x is not None for x in xs) and quantized_to_slices(xs, share=1.0)


def warnings(doc: dict, load: Optional[LoadReport] = None, limit: int = 5) -> List[str]:
    """Human-readable warnings for ``doc`` (a results document) and the load seen at start."""
    out: List[str] = []
    if load is not None and load.busy:
        out.append(f"the machine was busy at the start ({load.summary()}): timings are "
                   f"noisier and sparse kernels may lose more than dense to the contention")
    sliced = [f"{cid} {name}: {t['median_s'] * 1e3:.3g} ms ±"
              f"{100 * t['iqr_s'] / (2 * t['median_s']):.0f}%"
              for cid, name, t in _timings(doc) if quantized(t)]
    if sliced:
        more = f" (and {len(sliced) - limit} more)" if len(sliced) > limit else ""
        out.append(f"{len(sliced)} timings are whole scheduler slices (a thread waited for a "
                   f"core; the figure measures the machine's load, not the kernel): "
                   + "; ".join(sliced[:limit]) + more)
    noisy = [f"{cid} {name}" for cid, name, t in _timings(doc)
             if t["iqr_s"] > NOISY_SPREAD * t["median_s"]]
    if noisy:
        more = f" (and {len(noisy) - limit} more)" if len(noisy) > limit else ""
        out.append(f"{len(noisy)} timings spread more than {NOISY_SPREAD:.0%} (IQR/median): "
                   + ", ".join(noisy[:limit]) + more)
    return out
