"""Compressed sparse column (CSC) format for unstructured sparsity (EIE-style).

Tensors (docs/ARCHITECTURE.md, "The op"):
    values:  [nnz] stored values (dtype of W), column by column.
    indices: [nnz] row index of each value, increasing within a column; int16 when
             M <= 32767, else int32.
    offsets: [K + 1] column pointer; int32, int64 past 2^31 - 1 stored values.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import layouts
from .base import SparseFormat, check_dense_weight, scatter_entries
from .magnitude import check_prune_args, zero_smallest
from .validate import check_indices_range, check_offsets, check_one_index_each, shape_of

INT16_MAX_ROWS = 32767


def row_index_dtype(M: int) -> torch.dtype:
    return torch.int16 if M <= INT16_MAX_ROWS else torch.int32


class CSC(SparseFormat):
    """Column-compressed sparse matrix of logical shape [M, K] (see module docstring)."""

    layout = "csc"

    @classmethod
    def from_dense(cls, W: torch.Tensor) -> "CSC":
        """Pack the nonzeros of W [M, K] (NaN counts as nonzero)."""
        check_dense_weight(W)
        M, K = W.shape
        Wt = W.t()
        nonzero = Wt != 0
        cols, rows = nonzero.nonzero(as_tuple=True)  # sorted by column, then row
        values = Wt[cols, rows].contiguous()
        nnz = values.numel()
        off_dtype = torch.int32 if nnz <= 2**31 - 1 else torch.int64
        offsets = torch.zeros(K + 1, dtype=torch.int64, device=W.device)
        offsets[1:] = nonzero.sum(1).cumsum(0)
        return cls(values, rows.to(row_index_dtype(M)).contiguous(), offsets.to(off_dtype),
                   (M, K), validate=False)

    def column_of_entries(self) -> torch.Tensor:
        """[nnz] int64 column of each stored value."""
        K = self.shape[1]
        counts = (self.offsets[1:] - self.offsets[:-1]).long()
        return torch.repeat_interleave(torch.arange(K, device=self.device), counts)

    def _dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit; a row stored
        twice in a column adds up, as in ``spmm``)."""
        M, K = self.shape
        out = torch.zeros(M, K, dtype=self.dtype, device=self.device)
        if self.values.numel():
            rows, cols = self.indices.long(), self.column_of_entries()
            scatter_entries(out, (rows, cols), self.values, cols * M + rows)
        return out


def check_meta(values, indices, offsets, M: int, K: int) -> None:
    """Shapes and dtypes of the three CSC tensors (O(1))."""
    if values.dim() != 1:
        raise ValueError(f"csc values has shape {shape_of(values)}; expected [nnz]")
    nnz = values.shape[0]
    if indices.dtype not in (torch.int16, torch.int32) or indices.dim() != 1:
        raise ValueError(f"csc indices has shape {shape_of(indices)} and dtype {indices.dtype}; "
                         f"expected int16 or int32 of shape [nnz] = [{nnz}]")
    check_one_index_each("csc", values, indices, offsets, "values", "row indices")
    if indices.dtype == torch.int16 and M > 32768:
        raise ValueError(f"csc indices is int16 but M={M} rows need int32 row indices")
    if offsets.dtype not in (torch.int32, torch.int64) or offsets.dim() != 1 \
            or offsets.shape[0] != K + 1:
        raise ValueError(f"csc offsets has shape {shape_of(offsets)} and dtype {offsets.dtype}; "
                         f"expected int32 or int64 of shape [K + 1] = [{K + 1}]")


def check_structure(values, indices, offsets, M: int, K: int) -> None:
    check_offsets(offsets, values.shape[0], "csc")
    check_indices_range(indices, M, "csc row")


def coordinates(values, indices, offsets, M: int, K: int):
    """(row, col, position in values) of every stored entry, int64 [nnz] each."""
    dev = values.device
    counts = (offsets[1:] - offsets[:-1]).long()
    col = torch.repeat_interleave(torch.arange(K, device=dev), counts)
    return indices.long(), col, torch.arange(values.numel(), device=dev)


def prune_unstructured(W: torch.Tensor, sparsity: float, blocksize=None) -> torch.Tensor:
    """Zero the ``round(sparsity * W.numel())`` entries of smallest magnitude."""
    check_prune_args(W, sparsity)
    count = int(round(sparsity * W.numel()))
    return W * zero_smallest(W.abs(), count).to(W.dtype)


def pattern_density(W: torch.Tensor, blocksize=None) -> Optional[float]:
    """Nonzeros / (M*K): every weight fits."""
    return float((W != 0).float().mean()) if W.numel() else 0.0


def csc_bytes(M: int, K: int, nnz: int, elem: int, blocksize=None) -> int:
    """CSC bytes: values + row indices (int16 when M <= 32767) + int32 column pointer."""
    idx = 2 if M <= INT16_MAX_ROWS else 4
    off = 4 if nnz <= 2**31 - 1 else 8
    return nnz * (elem + idx) + (K + 1) * off


LAYOUT = layouts.register(layouts.Layout(
    name="csc", format=CSC, check_meta=check_meta, check_structure=check_structure,
    coordinates=coordinates, magnitude_prune=prune_unstructured,
    pattern_density=pattern_density, nbytes=csc_bytes, default_max_density=0.3,
    any_pattern=True))
