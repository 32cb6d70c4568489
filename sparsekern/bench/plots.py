"""PNG plots of a results document (matplotlib, Agg backend: no display needed).

One figure per layout variant (2:4, bsr32x32, csc, csc-relu, ...): a panel per weight
shape, speedup vs best dense (log scale) against sparsity, one line per batch N, the 1.0
line (break-even) and, dashed, the bytes-based bound of the memory-bound rows.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Sequence


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s.replace(":", "-")).strip("_")


def plot_speedups(doc: dict, out_dir: str, stem: str) -> List[str]:
    """Write ``{stem}-{variant}.png`` per layout variant; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_variant: Dict[str, List[dict]] = {}
    for c in doc["cases"]:
        by_variant.setdefault(c["variant"], []).append(c)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for variant, cases in by_variant.items():
        shapes = list(dict.fromkeys((c["shape"], c["M"], c["K"]) for c in cases))
        cols = min(3, len(shapes))
        rows = -(-len(shapes) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        for ax, (shape, M, K) in zip(axes.flat, shapes):
            _panel(ax, [c for c in cases if c["shape"] == shape], f"{shape} {M}×{K}")
        for ax in list(axes.flat)[len(shapes):]:
            ax.set_visible(False)
        fig.suptitle(f"{variant}: speedup vs best dense ({doc['device']}, {doc['name']})")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{stem}-{_slug(variant)}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _panel(ax, cases: Sequence[dict], title: str) -> None:
    Ns = sorted({c["N"] for c in cases})
    for n in Ns:
        pts = sorted((100 * c["sparsity"], c["speedup"].get("best_dense")) for c in cases
                     if c["N"] == n and c["speedup"].get("best_dense"))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"N={n}")
    bound = sorted({(100 * c["sparsity"], c["bound"]) for c in cases
                    if c.get("memory_bound") and c["N"] == min(Ns)})
    if bound:
        ax.plot([b[0] for b in bound], [b[1] for b in bound], "k--", lw=1,
                label=f"bytes bound (N={min(Ns)})")
    ax.axhline(1.0, color="gray", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity %")
    ax.set_ylabel("speedup")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
