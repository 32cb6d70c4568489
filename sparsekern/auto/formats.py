"""The sparse formats a layer may take, named as the latency table names them.

A format spec is a registered layout's name (``"2:4"``, ``"csc"``) or, for a blocked
layout, the name plus its block shape (``"bsr{bm}x{bk}"``, e.g. ``"bsr16x16"``); every
name derives from the layout registry (sparsekern/formats/layouts.py). ``"dense"`` means
the layer stays an nn.Linear / nn.Conv2d.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ..formats import layouts

DENSE = "dense"

_BLOCKS = re.compile(r"^(.*?)(\d+)x(\d+)$")


@dataclass(frozen=True)
class FormatSpec:
    """One sparse format: a registered ``layout`` and, for a blocked one, ``blocksize``."""

    layout: str
    blocksize: Optional[Tuple[int, int]] = None

    @property
    def name(self) -> str:
        if self.blocksize is not None:
            return f"{self.layout}{self.blocksize[0]}x{self.blocksize[1]}"
        return self.layout

    def __str__(self) -> str:
        return self.name


def _expected() -> str:
    plain = [repr(lay.name) for lay in layouts.all_layouts() if not lay.blocked]
    blocked = [f"'{lay.name}BMxBK'" for lay in layouts.all_layouts() if lay.blocked]
    opts = plain + blocked
    example = [f" (e.g. '{lay.name}16x16')" for lay in layouts.all_layouts() if lay.blocked]
    return ", ".join(opts[:-1]) + " or " + opts[-1] + "".join(example[:1])


def parse_format(name: str) -> FormatSpec:
    """``"2:4"`` / ``"csc"`` / ``"bsrBMxBK"`` (any registered layout) -> FormatSpec;
    ValueError otherwise."""
    if isinstance(name, str) and name in layouts.names() and not layouts.get(name).blocked:
        return FormatSpec(name)
    m = _BLOCKS.match(name) if isinstance(name, str) else None
    if m and m.group(1) in layouts.names() and layouts.get(m.group(1)).blocked \
            and int(m.group(2)) > 0 and int(m.group(3)) > 0:
        return FormatSpec(m.group(1), (int(m.group(2)), int(m.group(3))))
    raise ValueError(f"unknown format {name!r}; expected {_expected()}")


def default_blocks() -> Tuple[Tuple[int, int], ...]:
    """The block shapes measured for blocked layouts (each layout's ``block_shapes``)."""
    out = []
    for lay in layouts.all_layouts():
        out += [tuple(b) for b in lay.block_shapes if tuple(b) not in out]
    return tuple(out)


def format_specs(blocks: Optional[Sequence[Tuple[int, int]]] = None) -> Tuple[FormatSpec, ...]:
    """Every registered layout, a blocked one once per block shape of ``blocks`` (default:
    the layout's ``block_shapes``): 2:4, bsr4x4, bsr16x16, bsr32x32, csc."""
    specs = []
    for lay in layouts.all_layouts():
        if lay.blocked:
            shapes = lay.block_shapes if blocks is None else blocks
            specs += [FormatSpec(lay.name, (int(b[0]), int(b[1]))) for b in shapes]
        else:
            specs.append(FormatSpec(lay.name))
    return tuple(specs)
