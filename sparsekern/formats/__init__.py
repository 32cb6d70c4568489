"""Packed sparse formats: plain containers of the op's tensors (no backend code), and the
layout registry (formats/layouts.py), the one list of layouts."""
from __future__ import annotations

import torch

from . import layouts
from .base import SparseFormat, cached_repack
from .bsr import BSR
from .csc import CSC
from .nm14 import NM14
from .semi24 import Semi24
from .sell import SELL
from .validate import check_layout


def __getattr__(name):
    if name == "LAYOUTS":  # the registered layout names, derived from the registry
        return layouts.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_class(layout: str):
    """The SparseFormat subclass of a registered layout (ValueError naming ``layout``)."""
    return layouts.get(layout).format


def to_sparse(W: torch.Tensor, layout: str = "2:4", blocksize=None) -> SparseFormat:
    """Pack the zeros already present in W [M, K] into ``layout``; never prunes.

    Args:
        W: dense [M, K] float tensor (float32, float16, bfloat16 or float64), any device.
        layout: a registered layout: ``"2:4"``, ``"bsr"``, ``"csc"`` (see
            ``sparsekern.formats.layouts.names()``).
        blocksize: (bm, bk) for a blocked layout (``"bsr"``, default (32, 32)); must be None
            otherwise.
    """
    lay = layouts.get(layout)
    if lay.blocked:
        return lay.format.from_dense(W, (32, 32) if blocksize is None else blocksize)
    if blocksize is not None:
        raise ValueError(f"blocksize is only for layout='bsr'; got blocksize={blocksize!r} "
                         f"with layout={layout!r}")
    return lay.format.from_dense(W)


def from_parts(layout: str, values, indices, offsets, shape, validate: bool = True):
    """Rebuild a format from its three tensors and logical shape (M, K)."""
    return format_class(layout)(values, indices, offsets, tuple(shape), validate=validate)


__all__ = ["SparseFormat", "Semi24", "BSR", "CSC", "NM14", "SELL", "to_sparse", "from_parts", "format_class",
           "cached_repack", "LAYOUTS", "layouts", "check_layout"]
