"""Bytes and flops of a case, and the bytes-based speedup bound of memory-bound rows.

At small N (decode, GEMV) a Linear layer is memory bound: its time is the bytes it moves
over the memory bandwidth. A sparse kernel can then win at most
``bound = dense bytes / sparse bytes``. Bytes counted: the weight (dense M*K elements, or
the format's real tensors: values + indices + offsets), the activation x [N, K] read once
and the output y [M, N] written once. Per weight element this gives, in float32:

* dense: 4 B; 2:4: 2 B of values + 1/8 B of 2-bit metadata = 2.125 B (bound 1.88x);
* CSC with int16 rows: 6 B per stored value (bound 4 / (6 * density), 6.7x at 90%);
* BSR: bm*bk values per stored block + a 4 B block-column index (+ 4 B per block row).

With ReLU inputs an EIE-style CSC kernel skips the columns whose activation is zero in
every one of the N rows of x; ``live_column_fraction`` measures that share from the input.
A layout's bytes are its registry entry's ``nbytes`` (sparsekern/formats/layouts.py).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from ..formats import layouts as layout_registry


def semi24_bytes(M: int, K: int, elem: int) -> int:
    """2:4 format bytes: values [M, Kp/2] + uint8 metadata [M, ceil(Kp/8)] (no offsets)."""
    return layout_registry.get("2:4").nbytes(M, K, None, elem, None)


def csc_bytes(M: int, K: int, nnz: int, elem: int) -> int:
    """CSC bytes: values + row indices (int16 when M <= 32767) + int32 column pointer."""
    return layout_registry.get("csc").nbytes(M, K, nnz, elem, None)


def bsr_bytes(M: int, nnzb: int, blocksize: Tuple[int, int], elem: int) -> int:
    """BSR bytes: nnzb blocks of bm*bk values + int32 block-column + int32 row pointer."""
    bm, bk = blocksize
    return layout_registry.get("bsr").nbytes(M, 0, nnzb * bm * bk, elem, blocksize)


def io_bytes(M: int, K: int, N: int, elem: int) -> int:
    """Activation x [N, K] read once and output y [N, M] written once."""
    return (K * N + M * N) * elem


def dense_bytes(M: int, K: int, N: int, elem: int) -> int:
    return M * K * elem + io_bytes(M, K, N, elem)


def sparse_bytes(format_bytes: int, M: int, K: int, N: int, elem: int,
                 weight_fraction: float = 1.0) -> int:
    """Bytes of the sparse op; ``weight_fraction`` < 1 when whole columns are skipped."""
    return int(round(format_bytes * weight_fraction)) + io_bytes(M, K, N, elem)


def bytes_bound(dense: float, sparse: float) -> float:
    """Largest speedup a memory-bound sparse kernel can reach: dense bytes / sparse bytes."""
    if sparse <= 0:
        raise ValueError(f"sparse bytes must be > 0; got {sparse}")
    return dense / sparse


def live_column_fraction(x) -> float:
    """Share of the K columns of x [N, K] with any nonzero (the CSC columns a kernel reads)."""
    if x.numel() == 0:
        return 0.0
    return float((x != 0).any(dim=0).float().mean())


def dense_flops(M: int, K: int, N: int) -> int:
    return 2 * M * K * N


def stored_flops(stored: int, N: int) -> int:
    """Multiply-adds the sparse kernel really does: 2 per stored value per column of x."""
    return 2 * stored * N


def is_memory_bound(flops: float, nbytes: float, balance: Optional[float]) -> bool:
    """True when flops / bytes (arithmetic intensity) is below the machine's balance
    (peak flop/s over peak byte/s); without a balance, nothing is classified memory bound."""
    if balance is None or nbytes <= 0:
        return False
    return flops / nbytes < balance


def rate(amount: float, seconds: Optional[float]) -> Optional[float]:
    """amount / seconds / 1e9 (GB/s or GFLOP/s), None when no time was measured."""
    if seconds is None or seconds <= 0 or math.isnan(seconds):
        return None
    return amount / seconds / 1e9
