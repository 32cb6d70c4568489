"""Repacking of a CSC weight into row strips for the Triton CSC kernel (built once).

The CSC kernel computes one output tile of STRIP_ROWS rows per program, so it wants the
stored entries grouped by row strip rather than by column. The repack is a stable sort of
the entries by strip (inside a strip they stay in column order, so consecutive entries read
neighbouring rows of B):

    values [nnz]       the stored values, strip by strip (dtype of the weight)
    cols   [nnz]       column of each value: int16 when K <= 32767, else int32
    rows   [nnz]       uint8 row of each value inside its strip (0..STRIP_ROWS-1)
    ptr    [ceil(M/STRIP_ROWS) + 1]  first entry of each strip: int32, int64 past 2^31 - 1

That is 5 bytes per stored fp16 value (2 value + 2 column + 1 row). It is built on the
weight's device with torch ops from *validated* CSC tensors, so every column is in [0, K)
and every row in [0, M); the backend caches it with ``sparsekern.formats.cached_repack``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

#: Rows per strip = rows of one program's output tile (the smallest tl.dot M extent).
STRIP_ROWS = 16


class RowStrips(NamedTuple):
    values: torch.Tensor
    cols: torch.Tensor
    rows: torch.Tensor
    ptr: torch.Tensor


def build_row_strips(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                     M: int, K: int) -> RowStrips:
    """Repack CSC (values [nnz], row indices [nnz], column pointer [K+1]) into row strips."""
    device = values.device
    nnz = values.numel()
    counts = (offsets[1:] - offsets[:-1]).long()
    col = torch.repeat_interleave(torch.arange(K, device=device), counts, output_size=nnz)
    row = indices.long()
    strip = torch.div(row, STRIP_ROWS, rounding_mode="floor")
    order = torch.argsort(strip, stable=True)
    n_strips = -(-M // STRIP_ROWS)
    per_strip = torch.bincount(strip, minlength=n_strips)
    ptr_dtype = torch.int32 if nnz < 2**31 else torch.int64
    ptr = torch.zeros(n_strips + 1, dtype=torch.int64, device=device)
    ptr[1:] = per_strip.cumsum(0)
    col_dtype = torch.int16 if K <= 32767 else torch.int32
    return RowStrips(
        values=values.reshape(-1)[order].contiguous(),
        cols=col[order].to(col_dtype).contiguous(),
        rows=(row[order] % STRIP_ROWS).to(torch.uint8).contiguous(),
        ptr=ptr.to(ptr_dtype).contiguous(),
    )
