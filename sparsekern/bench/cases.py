"""The matrix of benchmark cases: layout x weight shape x batch N x sparsity.

A :class:`Case` names one measurement: a weight W [M, K] (out_features x in_features of a
real model's Linear layer), pruned by magnitude to ``sparsity`` in ``layout``'s pattern,
multiplied by an activation x [N, K] (``y = x @ W.T``, what SparseLinear computes). The
same Case drives the pytest-benchmark suites (bench/) and the report command
(``python -m sparsekern.bench``); the matrices below are the only place that decides what
is measured.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from ..formats import layouts as layout_registry

#: Environment variable that makes the pytest suites run the full matrix.
FULL_ENV = "SPARSEKERN_BENCH_FULL"

ACTIVATIONS = ("normal", "relu")


@dataclass(frozen=True)
class Shape:
    """A Linear weight shape [M, K] = [out_features, in_features] from a real model."""

    name: str
    M: int
    K: int
    source: str

    @property
    def label(self) -> str:
        return f"{self.M}x{self.K}"


#: Weight shapes [M, K] of real models (out_features x in_features).
SHAPES = {s.name: s for s in (
    Shape("minilm.attn", 384, 384, "MiniLM attention q/k/v/o"),
    Shape("minilm.ffn_up", 1536, 384, "MiniLM FFN up"),
    Shape("minilm.ffn_down", 384, 1536, "MiniLM FFN down"),
    Shape("bert.ffn_up", 3072, 768, "BERT-base FFN up / ViT-B MLP fc1"),
    Shape("bert.ffn_down", 768, 3072, "BERT-base FFN down / ViT-B MLP fc2"),
    Shape("llama.attn", 4096, 4096, "Llama-7B attention q/k/v/o, square 4096"),
    Shape("llama.mlp_up", 11008, 4096, "Llama-7B MLP gate/up"),
    Shape("llama.mlp_down", 4096, 11008, "Llama-7B MLP down"),
)}

BATCHES = (1, 8, 32, 128, 512)
SPARSITIES = (0.5, 0.7, 0.9, 0.95)
BSR_BLOCKS = layout_registry.get("bsr").block_shapes  # the registry's measured block shapes


@dataclass(frozen=True)
class Case:
    """One benchmark: W [M, K] pruned to ``sparsity`` in ``layout``, x [N, K].

    layout: a registered layout: "2:4" (sparsity always 0.5), "bsr" (with ``blocksize``
    (bm, bk)) or "csc".
    activation: "normal" (x ~ N(0, 1), no zeros) or "relu" (relu of N(0, 1): ~50% zeros,
    the activation-sparsity case that EIE-style kernels can exploit).
    """

    layout: str
    shape: Shape
    N: int
    sparsity: float
    blocksize: Optional[Tuple[int, int]] = None
    activation: str = "normal"

    def __post_init__(self):
        lay = layout_registry.get(self.layout)
        fixed = lay.fixed_density
        if fixed is not None and self.sparsity != 1.0 - fixed:
            raise ValueError(f"a {self.layout} case has sparsity {1.0 - fixed}; got "
                             f"sparsity={self.sparsity}")
        if lay.blocked != (self.blocksize is not None):
            blocked = "/".join(x.name for x in layout_registry.all_layouts() if x.blocked)
            raise ValueError(f"blocksize (bm, bk) is required for {blocked} and only for "
                             f"{blocked}; got layout={self.layout!r}, "
                             f"blocksize={self.blocksize!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1); got {self.sparsity}")
        if self.N < 1:
            raise ValueError(f"N must be >= 1; got {self.N}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")

    @property
    def M(self) -> int:
        return self.shape.M

    @property
    def K(self) -> int:
        return self.shape.K

    @property
    def variant(self) -> str:
        """The layout with its parameters: "2:4", "bsr32x32", "csc", "csc-relu"."""
        v = self.layout
        if self.blocksize is not None:
            v += f"{self.blocksize[0]}x{self.blocksize[1]}"
        if self.activation != "normal":
            v += f"-{self.activation}"
        return v

    @property
    def sparsity_pct(self) -> int:
        return int(round(self.sparsity * 100))

    @property
    def id(self) -> str:
        """Stable, unique name, e.g. ``bsr32x32/llama.attn-4096x4096/N8/s90``."""
        return (f"{self.variant}/{self.shape.name}-{self.shape.label}/N{self.N}/"
                f"s{self.sparsity_pct}")

    def to_dict(self) -> dict:
        return {"id": self.id, "layout": self.layout, "variant": self.variant,
                "blocksize": list(self.blocksize) if self.blocksize else None,
                "activation": self.activation, "sparsity": self.sparsity,
                "shape": self.shape.name, "source": self.shape.source,
                "M": self.M, "K": self.K, "N": self.N}


@dataclass(frozen=True)
class Variant:
    """A layout setting and the sparsities it is measured at."""

    layout: str
    sparsities: Tuple[float, ...]
    blocksize: Optional[Tuple[int, int]] = None
    activation: str = "normal"


def cases_of(shapes: Iterable[str], batches: Iterable[int], variants: Iterable[Variant]
             ) -> List[Case]:
    """The cartesian product, ordered variant, shape, sparsity, N: a layout's rows sit
    together, and consecutive cases share one weight (it does not depend on N)."""
    out = []
    batches = list(batches)
    for v in variants:
        for name in shapes:
            for s in v.sparsities:
                for n in batches:
                    if not layout_registry.get(v.layout).serves_batch(n):
                        continue  # a GEMV layout (sell) is not timed at large N
                    out.append(Case(v.layout, SHAPES[name], n, s, v.blocksize, v.activation))
    return out


def layout_variants(sparsities: Tuple[float, ...], other_blocks: Tuple[float, ...] = ()
                    ) -> List[Variant]:
    """One row per registered layout: a fixed-density layout (2:4) at its density, a blocked
    one (bsr) with 32x32 blocks at ``sparsities`` and its other measured block shapes at
    ``other_blocks``, the others (csc) at ``sparsities``."""
    out = []
    for lay in layout_registry.all_layouts():
        if lay.fixed_density is not None:
            out.append(Variant(lay.name, (1.0 - lay.fixed_density,)))
        elif lay.blocked:
            out.append(Variant(lay.name, sparsities, (32, 32)))
            out += [Variant(lay.name, other_blocks, tuple(b)) for b in lay.block_shapes
                    if tuple(b) != (32, 32) and other_blocks]
        else:
            out.append(Variant(lay.name, sparsities))
    return out


def _uncovered(variants: List[Variant], sparsities: Tuple[float, ...]) -> List[Variant]:
    """Rows for the registered layouts a hand-picked list lacks (so none goes unmeasured)."""
    have = {v.layout for v in variants}
    return [v for v in layout_variants(sparsities) if v.layout not in have]


def full_matrix() -> List[Case]:
    """Every shape x N x sparsity for every layout (2:4, bsr 32x32, csc); the other block
    shapes at 70 and 90%; ReLU inputs (csc-relu) at N = 1 and 8 only, since a column can be
    skipped only when all N activations in it are zero, which independent zeros make rare
    for larger N."""
    variants = layout_variants(SPARSITIES, (0.7, 0.9))
    cases = cases_of(SHAPES, BATCHES, variants)
    cases += cases_of(SHAPES, (1, 8), [Variant("csc", SPARSITIES, activation="relu")])
    return cases


def quick_matrix() -> List[Case]:
    """A representative subset (small/medium/large shape, decode/small/large batch)."""
    variants = [Variant("2:4", (0.5,)), Variant("bsr", (0.7, 0.9), (32, 32)),
                Variant("bsr", (0.9,), (16, 16)), Variant("csc", (0.7, 0.9, 0.95)),
                Variant("csc", (0.9,), activation="relu")]
    variants += _uncovered(variants, (0.9,))
    cases = []
    for v in variants:
        Ns = (1, 8) if v.activation == "relu" else (1, 32, 128)
        cases += cases_of(("minilm.ffn_up", "bert.ffn_down"), Ns, [v])
        cases += cases_of(("llama.attn",), Ns[:2], [v])
    return cases


def suite_matrix() -> List[Case]:
    """What ``pytest bench/`` measures by default: small, one row per layout idea."""
    shapes = ("minilm.ffn_up", "llama.attn")
    variants = [Variant("2:4", (0.5,)), Variant("bsr", (0.9,), (32, 32)),
                Variant("csc", (0.9,))]
    cases = cases_of(shapes, (1, 32), variants + _uncovered(variants, (0.9,)))
    cases += cases_of(("minilm.ffn_up",), (1,), [Variant("csc", (0.9,), activation="relu")])
    return cases


def matrix(name: str) -> List[Case]:
    """``"quick"``, ``"full"`` or ``"suite"`` (the suite is full when SPARSEKERN_BENCH_FULL=1)."""
    if name == "full":
        return full_matrix()
    if name == "quick":
        return quick_matrix()
    if name == "suite":
        return full_matrix() if os.environ.get(FULL_ENV, "") not in ("", "0") else suite_matrix()
    raise ValueError(f"matrix name must be 'quick', 'full' or 'suite'; got {name!r}")


def select_layouts(cases: Sequence[Case], layouts: Optional[Sequence[str]]) -> List[Case]:
    """Keep cases whose layout or variant is in ``layouts`` ("csc" keeps csc and csc-relu,
    "bsr" every block shape, "bsr32x32" one). None or empty keeps all."""
    if not layouts:
        return list(cases)
    known = {c.layout for c in cases} | {c.variant for c in cases} | set(layout_registry.names())
    bad = [x for x in layouts if x not in known]
    if bad:
        raise ValueError(f"unknown layout {bad[0]!r}; expected one of {', '.join(sorted(known))}")
    want = set(layouts)
    return [c for c in cases if c.layout in want or c.variant in want]
