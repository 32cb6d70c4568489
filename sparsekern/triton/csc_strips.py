"""Repacking of a CSC weight into row strips for the Triton CSC kernel (built once).

The CSC kernel computes one output tile of STRIP_ROWS rows per program, so it wants the
stored entries grouped by row strip rather than by column. The repack is a stable sort of
the entries by strip (inside a strip they stay in column order, so consecutive entries read
neighbouring rows of B):

    values [nnz]       the stored values, strip by strip (dtype of the weight)
    cols   [nnz]       column of each value: int16 when K <= 32767, else int32
    rows   [nnz]       uint8 row of each value inside its strip (0..STRIP_ROWS-1)
    ptr    [ceil(M/STRIP_ROWS) + 1]  first entry of each strip: int32, int64 past 2^31 - 1

Each strip's list is padded to a multiple of ALIGN entries (value 0, column 0, row
STRIP_ROWS, which matches no row, so a padding entry contributes nothing, not even to NaN
propagation): every strip then starts on an ALIGN boundary and the kernel's loads of
values and indices are vectorized (and pipelined with cp.async).

That is 5 bytes per stored fp16 value (2 value + 2 column + 1 row) plus the padding
(< ALIGN entries per strip). It is built on the weight's device with torch ops from
*validated* CSC tensors, so every column is in [0, K) and every row in [0, M); the backend
caches it with ``sparsekern.formats.cached_repack``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

#: Rows per strip = rows of one program's output tile (the smallest tl.dot M extent).
STRIP_ROWS = 16
#: Every strip's entry list starts at a multiple of this many entries.
ALIGN = 16


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
    padded = (per_strip + ALIGN - 1) // ALIGN * ALIGN
    ptr = torch.zeros(n_strips + 1, dtype=torch.int64, device=device)
    ptr[1:] = padded.cumsum(0)
    total = int(ptr[-1].item())
    first = torch.zeros(n_strips + 1, dtype=torch.int64, device=device)
    first[1:] = per_strip.cumsum(0)
    # Entry number i of the sorted list, in strip s, goes to ptr[s] + (i - first[s]).
    s_sorted = strip[order]
    dest = ptr[s_sorted] + (torch.arange(nnz, device=device) - first[s_sorted])

    col_dtype = torch.int16 if K <= 32767 else torch.int32
    out_values = torch.zeros(total, dtype=values.dtype, device=device)
    out_cols = torch.zeros(total, dtype=col_dtype, device=device)
    out_rows = torch.full((total,), STRIP_ROWS, dtype=torch.uint8, device=device)
    out_values[dest] = values.reshape(-1)[order]
    out_cols[dest] = col[order].to(col_dtype)
    out_rows[dest] = (row[order] % STRIP_ROWS).to(torch.uint8)
    ptr_dtype = torch.int32 if total < 2**31 else torch.int64
    return RowStrips(values=out_values, cols=out_cols, rows=out_rows, ptr=ptr.to(ptr_dtype))
