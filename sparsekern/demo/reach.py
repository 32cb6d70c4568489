"""What speedup a latency table allows at all, and the search target to fall back to.

A search whose target no plan can meet (every searchable layer at the highest ratio it may
take is still predicted too slow) finds nothing and leaves the model dense. So the demo
first asks the table what *is* reachable and, when the target is not and
``DemoConfig.relax_target`` is set, searches for a fraction of the reachable gain instead:
the job still shows a real sparse model with its measured speedup, and the checks keep
the required speedups, so they fail honestly.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

from ..auto.choose import decide
from ..auto.formats import DENSE, parse_format
from ..auto.patterns import planned_densities
from ..auto.table import LatencyTable


def reachable_speedup(table: LatencyTable, layers: Sequence[str], granularity,
                      ratio: float, margin: float) -> Dict[str, float]:
    """{shape: predicted speedup over the dense model} when every layer of ``layers`` is
    pruned to ``ratio`` in ``granularity`` and takes the format the search would give it
    (its fastest sparse format when that is at least ``margin`` faster at every shape, else
    dense), every other layer dense. The table's prediction (outside time + layers, in the
    cache context each plan's bytes give) gives both the dense and the sparse latency."""
    unknown = [n for n in layers if n not in table.layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not in the latency table (it has "
                         f"{list(table.layers)})")
    specs = [parse_format(f) for f in table.formats()]
    dens = planned_densities(granularity, ratio, specs)
    dense = table.predict()
    choices = {}
    for name in layers:
        d = decide(name, table.layers[name], dens, margin)
        if d.format != DENSE:
            choices[name] = (d.format, d.densities.get(d.format) or 1.0)
    total = table.predict(choices)
    return {s: dense[s] / total[s] for s in table.shapes}


def relaxed_targets(targets: Mapping[str, float], reachable: Mapping[str, float],
                    fraction: float, min_gain: float = 0.02) -> Dict[str, float]:
    """Per shape: the target when it is reachable, else ``fraction`` of the way from 1x to
    the reachable speedup. Empty when no shape can gain more than ``min_gain`` (nothing
    worth searching for)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if set(targets) != set(reachable):
        raise ValueError(f"targets and reachable must have the same shapes, got "
                         f"{sorted(targets)} and {sorted(reachable)}")
    if all(r <= 1.0 + min_gain for r in reachable.values()):
        return {}
    return {s: min(float(t), 1.0 + fraction * max(0.0, reachable[s] - 1.0))
            for s, t in targets.items()}
