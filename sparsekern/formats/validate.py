"""Checks of the three format tensors against the op contract (DESIGN.md, "The op").

``check_format_meta`` is O(1): shapes, dtypes and devices only; every call of the op runs
it. ``check_format_structure`` reads the index tensors (O(nnz)): offsets start at 0, never
decrease and end at the number of stored entries, and every index is in range. Formats
run both when they are built; the reference backend runs both on every call; the compiled
kernels check each index they use instead and report a bad one as an error.
"""
from __future__ import annotations

import torch

from .base import FLOAT_DTYPES

LAYOUTS = ("2:4", "bsr", "csc")

#: Largest M and K of a sparse weight: the formats' int32 indices (BSR block columns, CSC
#: rows) and the kernels' index arithmetic reach no further.
MAX_DIM = 2**31 - 1


def _shape(t: torch.Tensor):
    return list(t.shape)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def semi24_padded_k(K: int) -> int:
    """K rounded up to a whole number of groups of 4."""
    return ceil_div(K, 4) * 4


def semi24_meta_cols(K: int) -> int:
    """Bytes of 2:4 metadata per row: one nibble per group of 4, two groups per byte."""
    return ceil_div(ceil_div(K, 4), 2)


def check_layout(layout) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(repr(x) for x in LAYOUTS)}; got {layout!r}")


def check_format_meta(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                      M, K, layout: str) -> None:
    """Check the format tensors' ranks, shapes, dtypes and devices; O(1)."""
    check_layout(layout)
    for name, t in (("values", values), ("indices", indices), ("offsets", offsets)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if M < 0 or K < 0:
        raise ValueError(f"M and K must be >= 0, got M={M}, K={K}")
    if M > MAX_DIM or K > MAX_DIM:
        raise ValueError(f"M={M}, K={K}: sizes above 2^31 - 1 = {MAX_DIM} are not served (the "
                         f"formats' int32 indices cannot address them); expected M, K <= {MAX_DIM}")
    if values.dtype not in FLOAT_DTYPES:
        raise TypeError(f"values has dtype {values.dtype}; expected one of float32, float16, "
                        f"bfloat16, float64")
    for name, t in (("indices", indices), ("offsets", offsets)):
        if t.device != values.device:
            raise ValueError(f"{name} is on {t.device} but values is on {values.device}; "
                             f"all format tensors must be on one device")

    if layout == "2:4":
        half = semi24_padded_k(K) // 2
        if values.dim() != 2 or values.shape[0] != M or values.shape[1] != half:
            raise ValueError(f"2:4 values has shape {_shape(values)}; expected [M, ceil(K/4)*2] = "
                             f"[{M}, {half}] for M={M}, K={K}")
        if indices.dtype != torch.uint8:
            raise TypeError(f"2:4 indices has dtype {indices.dtype}; expected torch.uint8 "
                            f"(packed 2-bit positions)")
        mcols = semi24_meta_cols(K)
        if indices.dim() != 2 or indices.shape[0] != M or indices.shape[1] != mcols:
            raise ValueError(f"2:4 indices has shape {_shape(indices)}; expected "
                             f"[M, ceil(K/8)] = [{M}, {mcols}] for M={M}, K={K}")
        if offsets.numel() != 0:
            raise ValueError(f"2:4 offsets must be empty, got shape {_shape(offsets)}")
    elif layout == "bsr":
        if values.dim() != 3:
            raise ValueError(f"bsr values has shape {_shape(values)}; expected [nnzb, bm, bk]")
        nnzb, bm, bk = values.shape
        if bm < 1 or bk < 1:
            raise ValueError(f"bsr values has shape {_shape(values)}: block size ({bm}, {bk}) "
                             f"must be positive")
        if indices.dtype != torch.int32 or indices.dim() != 1 or indices.shape[0] != nnzb:
            raise ValueError(f"bsr indices has shape {_shape(indices)} and dtype {indices.dtype}; "
                             f"expected int32 of shape [nnzb] = [{nnzb}]")
        rows = ceil_div(M, bm)
        if offsets.dtype != torch.int32 or offsets.dim() != 1 or offsets.shape[0] != rows + 1:
            raise ValueError(f"bsr offsets has shape {_shape(offsets)} and dtype {offsets.dtype}; "
                             f"expected int32 of shape [ceil(M/bm) + 1] = [{rows + 1}]")
    else:  # csc
        if values.dim() != 1:
            raise ValueError(f"csc values has shape {_shape(values)}; expected [nnz]")
        nnz = values.shape[0]
        if indices.dtype not in (torch.int16, torch.int32) or indices.dim() != 1 \
                or indices.shape[0] != nnz:
            raise ValueError(f"csc indices has shape {_shape(indices)} and dtype {indices.dtype}; "
                             f"expected int16 or int32 of shape [nnz] = [{nnz}]")
        if indices.dtype == torch.int16 and M > 32768:
            raise ValueError(f"csc indices is int16 but M={M} rows need int32 row indices")
        if offsets.dtype not in (torch.int32, torch.int64) or offsets.dim() != 1 \
                or offsets.shape[0] != K + 1:
            raise ValueError(f"csc offsets has shape {_shape(offsets)} and dtype {offsets.dtype}; "
                             f"expected int32 or int64 of shape [K + 1] = [{K + 1}]")


def _first_bad(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0].item())


def check_offsets(offsets: torch.Tensor, total: int, what: str) -> None:
    """Offsets start at 0, never decrease and end at ``total``."""
    o = offsets.long()
    if int(o[0].item()) != 0:
        raise ValueError(f"{what} offsets must start at 0, got offsets[0]={int(o[0].item())}")
    if int(o[-1].item()) != total:
        raise ValueError(f"{what} offsets must end at the number of stored entries {total}, "
                         f"got offsets[-1]={int(o[-1].item())}")
    if o.numel() > 1:
        dec = o[1:] < o[:-1]
        if bool(dec.any()):
            i = _first_bad(dec)
            raise ValueError(f"{what} offsets must not decrease: offsets[{i + 1}]="
                             f"{int(o[i + 1].item())} < offsets[{i}]={int(o[i].item())}")


def check_indices_range(indices: torch.Tensor, bound: int, what: str) -> None:
    """Every index is in [0, bound)."""
    if indices.numel() == 0:
        return
    idx = indices.long()
    bad = (idx < 0) | (idx >= bound)
    if bool(bad.any()):
        i = _first_bad(bad)
        raise ValueError(f"{what} indices[{i}]={int(idx[i].item())} is out of range; "
                         f"expected 0 <= index < {bound}")


def check_format_structure(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                           M: int, K: int, layout: str) -> None:
    """Read the index tensors and reject any entry a kernel could not use safely."""
    if layout == "2:4":
        if indices.numel() == 0:
            return
        # Each nibble holds two 2-bit positions; the first must be below the second.
        lo = indices & 0x0F
        hi = indices >> 4
        G = semi24_padded_k(K) // 4
        for half, nib in ((0, lo), (1, hi)):
            p0, p1 = nib & 3, nib >> 2
            bad = p0 >= p1
            if half == 1 and G % 2 == 1:
                bad[:, -1] = False  # the unused high nibble of an odd group count
            if bool(bad.any()):
                r, c = (int(x) for x in bad.nonzero()[0].tolist())
                g = 2 * c + half
                raise ValueError(f"2:4 indices row {r}, group {g}: positions "
                                 f"({int(p0[r, c])}, {int(p1[r, c])}) must be strictly increasing")
    elif layout == "bsr":
        nnzb, bm, bk = values.shape
        check_offsets(offsets, nnzb, "bsr")
        check_indices_range(indices, ceil_div(K, bk), "bsr block-column")
    else:
        check_offsets(offsets, values.shape[0], "csc")
        check_indices_range(indices, M, "csc row")


def validate_format(values, indices, offsets, M: int, K: int, layout: str) -> None:
    """Both checks; what a format's constructor runs."""
    check_format_meta(values, indices, offsets, M, K, layout)
    for name, t in (("values", values), ("indices", indices), ("offsets", offsets)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {list(t.stride())}")
    check_format_structure(values, indices, offsets, M, K, layout)
