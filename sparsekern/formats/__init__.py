"""Packed sparse formats: plain containers of the op's tensors (no backend code)."""
from __future__ import annotations

import torch

from .base import SparseFormat, cached_repack
from .bsr import BSR
from .csc import CSC
from .semi24 import Semi24
from .validate import LAYOUTS, check_layout

_CLASSES = {"2:4": Semi24, "bsr": BSR, "csc": CSC}


def format_class(layout: str):
    check_layout(layout)
    return _CLASSES[layout]


def to_sparse(W: torch.Tensor, layout: str = "2:4", blocksize=None) -> SparseFormat:
    """Pack the zeros already present in W [M, K] into ``layout``; never prunes.

    Args:
        W: dense [M, K] float tensor (float32, float16, bfloat16 or float64), any device.
        layout: ``"2:4"``, ``"bsr"`` or ``"csc"``.
        blocksize: (bm, bk) for ``"bsr"`` (default (32, 32)); must be None otherwise.
    """
    cls = format_class(layout)
    if layout == "bsr":
        return cls.from_dense(W, (32, 32) if blocksize is None else blocksize)
    if blocksize is not None:
        raise ValueError(f"blocksize is only for layout='bsr'; got blocksize={blocksize!r} "
                         f"with layout={layout!r}")
    return cls.from_dense(W)


def from_parts(layout: str, values, indices, offsets, shape, validate: bool = True):
    """Rebuild a format from its three tensors and logical shape (M, K)."""
    return format_class(layout)(values, indices, offsets, tuple(shape), validate=validate)


__all__ = ["SparseFormat", "Semi24", "BSR", "CSC", "to_sparse", "from_parts", "format_class",
           "cached_repack", "LAYOUTS"]
