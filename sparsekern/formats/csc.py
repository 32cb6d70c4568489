"""Compressed sparse column (CSC) format for unstructured sparsity (EIE-style).

Tensors (DESIGN.md, "The op"):
    values:  [nnz] stored values (dtype of W), column by column.
    indices: [nnz] row index of each value, increasing within a column; int16 when
             M <= 32767, else int32.
    offsets: [K + 1] column pointer; int32, int64 past 2^31 - 1 stored values.
"""
from __future__ import annotations

import torch

from .base import SparseFormat, check_dense_weight

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

    def to_dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit)."""
        M, K = self.shape
        out = torch.zeros(M, K, dtype=self.dtype, device=self.device)
        if self.values.numel():
            out[self.indices.long(), self.column_of_entries()] = self.values
        return out
