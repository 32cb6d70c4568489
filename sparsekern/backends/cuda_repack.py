"""Repacked copies of 2:4 and CSC weights in the layouts the CUDA kernels read.

Pure torch (any device), so the reordering is tested on the CPU. The cuda backend builds each
copy once per weight with :func:`sparsekern.formats.cached_repack`, on the weight's device.
Building a copy also validates the user's format tensors (the same checks, and messages, as
the reference backend), so hand-made tensors with bad indices raise here, never in a kernel.

The constants mirror csrc/cuda/kernels.h and must stay equal to them.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..formats.semi24 import semi24_columns
from ..formats.validate import ceil_div, check_format_structure

#: Repacked 2:4 rows are padded to this (the largest block tile along M).
SEMI24_ROW_PAD = 128
#: Repacked 2:4 columns are padded to this (the largest block tile along K).
SEMI24_COL_PAD = 256
#: Metadata nibble of padding groups: positions (0, 1), a valid ordered pair.
SEMI24_PAD_NIBBLE = 0b0100
#: Rows per CSC slab: slab-local row indices fit 16 bits, a slab's sums fit shared memory.
CSC_SLAB_ROWS = 256


class Semi24Repacked(NamedTuple):
    """2:4 weight in mma.sp operand order (see csrc/cuda/kernels.h).

    a_frag: [Mp/16, Kp/32, 32, 8] values dtype. For 16-row tile mt and 32-column step ks,
            lane l = 4*g + t holds the kept values at compressed columns {2t, 2t+1} of rows
            g and g+8, then compressed columns {2t+8, 2t+9} of rows g and g+8.
    meta:   [Mp/16, Kp/32, 16] int32 (bit pattern of a uint32). Word 2*g + h holds the
            nibbles of groups 4h..4h+3 of the step: row g in bits 0..15, row g+8 in 16..31.
    """
    a_frag: torch.Tensor
    meta: torch.Tensor


class CscRepacked(NamedTuple):
    """CSC weight cut into slabs of CSC_SLAB_ROWS rows (see csrc/cuda/kernels.h).

    values: [nnz'] values dtype, slab by slab, column by column within a slab.
    rows:   [nnz'] int16, row index local to the slab (0 <= row < CSC_SLAB_ROWS).
    ptr:    [ceil(M / CSC_SLAB_ROWS), K + 1] int32; slab s, column k holds entries
            ptr[s, k] .. ptr[s, k + 1] - 1.
    nnz' <= nnz: entries repeated at one (row, column) are summed into one.
    """
    values: torch.Tensor
    rows: torch.Tensor
    ptr: torch.Tensor


def _as_int32_bits(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 tensor holding the same 32 bits."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def repack_semi24(values: torch.Tensor, indices: torch.Tensor, M: int, K: int) -> Semi24Repacked:
    """Reorder a 2:4 weight (values [M, Kp4/2], indices uint8 [M, ceil(Kp4/8)]) for mma.sp.

    Rows are padded to a multiple of SEMI24_ROW_PAD and columns to SEMI24_COL_PAD with zero
    values and the position pair (0, 1); stored values in columns >= K are zeroed (the
    format never reads them). Raises ValueError for a position pair that is not strictly
    increasing (mma.sp::ordered_metadata needs first < second).
    """
    offsets = torch.empty(0, dtype=torch.int32, device=values.device)
    check_format_structure(values, indices, offsets, M, K, "2:4")
    Mp = ceil_div(M, SEMI24_ROW_PAD) * SEMI24_ROW_PAD
    Kp = ceil_div(K, SEMI24_COL_PAD) * SEMI24_COL_PAD
    G = ceil_div(K, 4)  # groups stored by the format
    Mt, Kt = Mp // 16, Kp // 32
    dev = values.device

    # Values, zero outside [M, K], compressed columns: group q holds columns 2q, 2q+1.
    V = torch.zeros(Mp, Kp // 2, dtype=values.dtype, device=dev)
    if M and G:
        kept = values.masked_fill(semi24_columns(indices, K) >= K, 0)
        V[:M, :2 * G] = kept
    # row = 16*mt + 8*rh + g, compressed column = 16*ks + 8*ch + 2*t + e  ->
    # [mt, ks, lane = 4*g + t, register = 2*ch + rh, e]
    a_frag = (V.view(Mt, 2, 8, Kt, 2, 4, 2).permute(0, 3, 2, 5, 4, 1, 6)
              .reshape(Mt, Kt, 32, 8).contiguous())

    # One nibble per group: bits 0-1 first position, bits 2-3 second (the format's own nibble).
    nib = torch.full((Mp, Kp // 4), SEMI24_PAD_NIBBLE, dtype=torch.int64, device=dev)
    if M and G:
        pairs = torch.stack((indices & 0x0F, indices >> 4), dim=-1).reshape(M, -1)[:, :G]
        nib[:M, :G] = pairs.to(torch.int64)
    shifts = torch.arange(4, device=dev, dtype=torch.int64) * 4
    half = (nib.view(Mp, Kp // 16, 4) << shifts).sum(-1)  # 16 bits: 4 groups of one row
    half = half.view(Mt, 2, 8, Kt, 2)  # [mt, row half rh, g, ks, group quad h]
    words = half[:, 0] | (half[:, 1] << 16)  # [mt, g, ks, h]
    meta = _as_int32_bits(words.permute(0, 2, 1, 3).reshape(Mt, Kt, 16)).contiguous()
    return Semi24Repacked(a_frag, meta)


def repack_csc_slabs(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                     M: int, K: int) -> Optional[CscRepacked]:
    """Cut a CSC weight (values [nnz], indices [nnz] rows, offsets [K+1]) into row slabs.

    Returns None when the result would not fit the kernel's int32 slab pointers (more than
    2^31 - 1 entries). Raises ValueError for offsets that are not a valid column pointer or
    row indices outside [0, M) (same checks as the reference backend).
    """
    check_format_structure(values, indices, offsets, M, K, "csc")
    nnz = values.numel()
    if nnz > 2**31 - 1:
        return None
    dev = values.device
    n_slabs = ceil_div(M, CSC_SLAB_ROWS)
    counts = (offsets[1:] - offsets[:-1]).long()
    col = torch.repeat_interleave(torch.arange(K, device=dev), counts)
    row = indices.long()
    slab = torch.div(row, CSC_SLAB_ROWS, rounding_mode="floor")
    # Order: slab, then column, then row; equal keys are one (row, column) stored twice.
    key = (slab * K + col) * M + row if M else row
    order = torch.argsort(key, stable=True)
    key = key[order]
    uniq, inverse = torch.unique_consecutive(key, return_inverse=True)
    if uniq.numel() == nnz:
        vals = values.reshape(-1)[order].contiguous()
    else:  # repeated entries contribute their sum, as in the reference
        vals = torch.zeros(uniq.numel(), dtype=torch.float32, device=dev)
        vals.index_add_(0, inverse, values.reshape(-1)[order].float())
        vals = vals.to(values.dtype)
    u_row = uniq % M if M else uniq
    u_slab_col = torch.div(uniq, M, rounding_mode="floor") if M else uniq
    rows = (u_row - torch.div(u_row, CSC_SLAB_ROWS, rounding_mode="floor") * CSC_SLAB_ROWS)
    per = torch.bincount(u_slab_col, minlength=n_slabs * K) if uniq.numel() else \
        torch.zeros(n_slabs * K, dtype=torch.int64, device=dev)
    start = torch.zeros(n_slabs * K + 1, dtype=torch.int64, device=dev)
    start[1:] = torch.cumsum(per, 0)
    idx = (torch.arange(n_slabs, device=dev).view(-1, 1) * K +
           torch.arange(K + 1, device=dev).view(1, -1))
    ptr = start[idx].to(torch.int32).contiguous()
    return CscRepacked(vals, rows.to(torch.int16).contiguous(), ptr)


def kernel_reads_b(B: torch.Tensor) -> bool:
    """Can the 2:4 kernel read B [K, N] in place (16-byte aligned, one dimension contiguous,
    the other's stride a multiple of 8 elements)? Mirrors semi24_mma_spmm's check."""
    K, N = B.shape
    if B.data_ptr() % 16:
        return False
    s_k, s_n = B.stride()
    if s_k == 1 and (N == 1 or s_n % 8 == 0):
        return True
    return s_n == 1 and (K <= 1 or s_k % 8 == 0)


def semi24_b_operand(B: torch.Tensor) -> torch.Tensor:
    """B itself when the 2:4 kernel can read it, else a copy it can (counted in the call).

    The copy keeps K contiguous for N <= 16 (decode: rows of x in x @ W.T) and N contiguous
    otherwise; its padded rows are never read.
    """
    if kernel_reads_b(B):
        return B
    K, N = B.shape
    if N <= 16:
        buf = B.new_empty((N, ceil_div(K, 8) * 8))
        buf[:, :K].copy_(B.t())
        return buf[:, :K].t()
    buf = B.new_empty((K, ceil_div(N, 8) * 8))
    buf[:, :N].copy_(B)
    return buf[:, :N]


__all__ = ["Semi24Repacked", "CscRepacked", "repack_semi24", "repack_csc_slabs",
           "kernel_reads_b", "semi24_b_operand", "SEMI24_ROW_PAD", "SEMI24_COL_PAD",
           "CSC_SLAB_ROWS"]
