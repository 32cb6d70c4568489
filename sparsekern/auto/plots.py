"""PNG plots of latency: the table's curves, and per-layer dense vs sparse (Agg backend)."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

from .formats import DENSE
from .table import LatencyTable


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_table(table: LatencyTable, path: Union[str, os.PathLike],
               layers: Optional[Sequence[str]] = None) -> str:
    """One panel per (layer, shape): time vs sparsity per format, dense dashed (log y)."""
    names = list(table.layers) if layers is None else list(layers)
    panels = [(n, s) for n in names for s in table.layers[n]]
    cols = min(3, max(1, len(table.shapes)))
    rows = -(-len(panels) // cols)
    fig = _figure(4.6 * cols, 3.4 * rows)
    for i, (name, shape) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        e = table.layers[name][shape]
        for fmt in e.formats():
            pts = e.points(fmt)
            ax.plot([100 * (1 - d) for d, _ in pts], [t * 1e3 for _, t in pts],
                    marker="o", ms=3, label=fmt)
        ax.axhline(e.dense_s * 1e3, color="k", linestyle="--", lw=1, label=DENSE)
        ax.set_yscale("log")
        ax.set_xlabel("sparsity (1 - stored fraction) %")
        ax.set_ylabel("ms")
        ax.set_title(f"{name} @ {shape}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle("latency table: layer time per format")
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    return os.fspath(path)


def plot_layer_latency(measured: Mapping[str, Mapping[str, Mapping[str, float]]],
                       formats: Mapping[str, str], path: Union[str, os.PathLike]) -> str:
    """Grouped bars: per layer, dense vs its chosen format, one panel per shape.

    ``measured``: {shape: {layer: {"dense": s, "sparse": s}}}; ``formats``: {layer: name}.
    """
    shapes = list(measured)
    fig = _figure(5.0 * len(shapes), 3.8)
    for i, shape in enumerate(shapes):
        ax = fig.add_subplot(1, len(shapes), i + 1)
        layers = list(measured[shape])
        xs = range(len(layers))
        dense = [measured[shape][n]["dense"] * 1e3 for n in layers]
        sparse = [measured[shape][n]["sparse"] * 1e3 for n in layers]
        ax.bar([x - 0.2 for x in xs], dense, 0.4, label="dense")
        ax.bar([x + 0.2 for x in xs], sparse, 0.4, label="after pruning + auto format")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{n}\n{formats.get(n, DENSE)}" for n in layers], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call")
        ax.set_title(f"input {shape}", fontsize=9)
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)
    fig.suptitle("per-layer latency, measured")
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    return os.fspath(path)
