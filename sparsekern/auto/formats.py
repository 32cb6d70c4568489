"""The sparse formats a layer may take, named as the latency table names them.

A format spec is ``"2:4"``, ``"csc"`` or ``"bsr{bm}x{bk}"`` (e.g. ``"bsr16x16"``): a layout
plus, for BSR, its block shape. ``"dense"`` means the layer stays an nn.Linear / nn.Conv2d.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

DENSE = "dense"

_BSR = re.compile(r"^bsr(\d+)x(\d+)$")


@dataclass(frozen=True)
class FormatSpec:
    """One sparse format: ``layout`` ("2:4", "bsr", "csc") and ``blocksize`` for bsr."""

    layout: str
    blocksize: Optional[Tuple[int, int]] = None

    @property
    def name(self) -> str:
        if self.layout == "bsr":
            return f"bsr{self.blocksize[0]}x{self.blocksize[1]}"
        return self.layout

    def __str__(self) -> str:
        return self.name


def parse_format(name: str) -> FormatSpec:
    """``"2:4"`` / ``"csc"`` / ``"bsrBMxBK"`` -> FormatSpec; ValueError otherwise."""
    if name in ("2:4", "csc"):
        return FormatSpec(name)
    m = _BSR.match(name) if isinstance(name, str) else None
    if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        return FormatSpec("bsr", (int(m.group(1)), int(m.group(2))))
    raise ValueError(f"unknown format {name!r}; expected '2:4', 'csc' or 'bsrBMxBK' "
                     f"(e.g. 'bsr16x16')")


def default_blocks() -> Tuple[Tuple[int, int], ...]:
    """The BSR block shapes the benchmark harness measures (sparsekern.bench.cases)."""
    from ..bench.cases import BSR_BLOCKS
    return tuple(tuple(b) for b in BSR_BLOCKS)


def format_specs(blocks: Optional[Sequence[Tuple[int, int]]] = None) -> Tuple[FormatSpec, ...]:
    """2:4, every BSR block shape of ``blocks`` (default :func:`default_blocks`), CSC."""
    blocks = default_blocks() if blocks is None else blocks
    return ((FormatSpec("2:4"),) + tuple(FormatSpec("bsr", (int(b[0]), int(b[1])))
                                         for b in blocks) + (FormatSpec("csc"),))
