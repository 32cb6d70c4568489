"""SELL-16x64 format: unstructured sparsity in row slices, for GEMV (decoding, N = 1).

Added by following docs/adding-a-layout.md; everything sparsekern knows about it is here.

Rows are cut into slices of 16 (the lanes of a zmm), columns into blocks of 64. For slice s
and column block b, the entries of the slice's 16 rows in the block's 64 columns are stored
as ``steps``: step t holds at most one entry per row (lane). A (slice, block) has as many
steps as its fullest row has entries there; lanes with fewer entries are padded.

Tensors (docs/ARCHITECTURE.md, "The op"), for a logical [M, K] with S = ceil(M/16) slices
and KB = ceil(K/64) blocks:
    values:  [T, 16] (dtype of W): values[t, l] is the entry of row 16 s + l at step t
             (0 in a padding lane).
    indices: [T, 16] uint8: the entry's column within its block (column 64 b + index), below
             the block's width (64; K - 64 (KB - 1) in the last block), or 255 for a padding
             lane (no entry). Lanes of rows >= M (the last slice) are padding.
    offsets: [S * KB + 1] int32 (int64 past 2^31 - 1 steps): steps of slice s, block b are
             offsets[s*KB + b] .. offsets[s*KB + b + 1] - 1.
:meth:`SELL.from_dense` stores each lane's entries in increasing column order and no more
steps than needed; the op accepts any order (entries of one position add up).

Why a layout of its own: at N = 1 a CSC (or CSR) kernel moves each activation with a
gather or scatter, ~1 element per cycle; here a block's 64 activations sit in registers and
a step picks 16 at once (csrc/cpu/sell.cpp). The padding costs bytes: at 90% sparsity a
step stores ~1.7 lanes per entry (5 bytes a lane: value + index), ~8.5 bytes per entry
against CSC's 6, so SELL wins where a GEMV is bound by instructions (the weight in cache, or
cold on a machine with bandwidth to spare) and loses where the bytes decide.

Kernels: the forward has its own, csrc/cpu/sell.cpp (every N, every ISA), run by the C++ fast
path of ``sparsekern::spmm``. The Python path (a forced backend, autograd, the backward
products) runs the CSC kernels on a CSC copy built once per weight and cached on ``values``
(:func:`as_csc`; weights made in ``torch.inference_mode`` rebuild it per call). Triton and
CUDA do not serve it (those calls go to the reference).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import layouts
from .base import SparseFormat, cached_repack, check_dense_weight, scatter_entries
from .csc import prune_unstructured, row_index_dtype
from .validate import ceil_div, check_offsets, first_bad, shape_of

LANES = 16   #: rows per slice
BLOCK = 64   #: columns per block
NONE = 255   #: index of a padding lane


def _grid(M: int, K: int):
    """(S, KB): slices of 16 rows and blocks of 64 columns of an [M, K] weight."""
    return ceil_div(M, LANES), ceil_div(K, BLOCK)


class SELL(SparseFormat):
    """Row-sliced sparse matrix of logical shape [M, K] (see module docstring)."""

    layout = "sell"

    @classmethod
    def from_dense(cls, W: torch.Tensor) -> "SELL":
        """Pack the nonzeros of W [M, K] (NaN counts as nonzero)."""
        check_dense_weight(W)
        M, K = W.shape
        S, KB = _grid(M, K)
        dev = W.device
        rows, cols = (W != 0).nonzero(as_tuple=True)  # row-major: by row, then column
        group = rows * KB + torch.div(cols, BLOCK, rounding_mode="floor")  # (row, block)
        counts = torch.bincount(group, minlength=M * KB)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(rows.numel(), device=dev) - first[group]  # step within its group
        per_lane = torch.nn.functional.pad(counts.reshape(M, KB), (0, 0, 0, S * LANES - M))
        steps = per_lane.reshape(S, LANES, KB).amax(1).reshape(-1)  # [S * KB]
        offsets = torch.zeros(S * KB + 1, dtype=torch.int64, device=dev)
        offsets[1:] = torch.cumsum(steps, 0)
        T = int(offsets[-1])
        sb = torch.div(rows, LANES, rounding_mode="floor") * KB + \
            torch.div(cols, BLOCK, rounding_mode="floor")
        pos = (offsets[sb] + rank) * LANES + rows % LANES
        values = torch.zeros(T * LANES, dtype=W.dtype, device=dev)
        indices = torch.full((T * LANES,), NONE, dtype=torch.uint8, device=dev)
        values[pos] = W[rows, cols]
        indices[pos] = (cols % BLOCK).to(torch.uint8)
        off_dtype = torch.int32 if T <= 2**31 - 1 else torch.int64
        return cls(values.reshape(T, LANES), indices.reshape(T, LANES),
                   offsets.to(off_dtype), (M, K), validate=False)

    def to_dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit; a position
        stored twice adds up, as in ``spmm``)."""
        M, K = self.shape
        out = torch.zeros(M, K, dtype=self.dtype, device=self.device)
        row, col, pos = coordinates(self.values, self.indices, self.offsets, M, K)
        if pos.numel():
            scatter_entries(out, (row, col), self.values.reshape(-1)[pos], row * K + col)
        return out


def check_meta(values, indices, offsets, M: int, K: int) -> None:
    """Shapes and dtypes of the three SELL tensors (O(1))."""
    S, KB = _grid(M, K)
    if values.dim() != 2 or values.shape[1] != LANES:
        raise ValueError(f"sell values has shape {shape_of(values)}; expected [steps, {LANES}]")
    T = values.shape[0]
    if indices.dtype != torch.uint8:
        raise TypeError(f"sell indices has dtype {indices.dtype}; expected torch.uint8 "
                        f"(columns within 64-column blocks, 255 for padding)")
    if indices.dim() != 2 or tuple(indices.shape) != (T, LANES):
        raise ValueError(f"sell indices has shape {shape_of(indices)}; expected [steps, "
                         f"{LANES}] = [{T}, {LANES}] (the shape of values)")
    if offsets.dtype not in (torch.int32, torch.int64) or offsets.dim() != 1 \
            or offsets.shape[0] != S * KB + 1:
        raise ValueError(f"sell offsets has shape {shape_of(offsets)} and dtype {offsets.dtype}; "
                         f"expected int32 or int64 of shape [ceil(M/16) * ceil(K/64) + 1] = "
                         f"[{S * KB + 1}] for M={M}, K={K}")


def _step_groups(offsets, S: int, KB: int, T: int, dev) -> torch.Tensor:
    """[T] int64: the (slice * KB + block) each step belongs to (offsets already checked)."""
    counts = (offsets[1:] - offsets[:-1]).long()
    return torch.repeat_interleave(torch.arange(S * KB, device=dev), counts, output_size=T)


def check_structure(values, indices, offsets, M: int, K: int) -> None:
    """Offsets, and every index below its block's width or 255; rows >= M hold padding."""
    S, KB = _grid(M, K)
    T = values.shape[0]
    check_offsets(offsets, T, "sell")
    if T == 0:
        return
    sb = _step_groups(offsets, S, KB, T, values.device)
    width = (K - BLOCK * (sb % KB)).clamp(max=BLOCK)  # [T]
    row = torch.div(sb, KB, rounding_mode="floor").unsqueeze(1) * LANES + \
        torch.arange(LANES, device=values.device)
    idx = indices.long()
    real = idx != NONE
    bad = (real & (idx >= width.unsqueeze(1))) | (real & (row >= M))
    if bool(bad.any()):
        i = first_bad(bad.reshape(-1))
        t, lane = divmod(i, LANES)
        raise ValueError(
            f"sell indices[{t}, {lane}]={int(idx[t, lane])} is out of range for row "
            f"{int(row[t, lane])}, column block {int(sb[t]) % KB}; expected 255 (padding) or "
            f"0 <= index < {int(width[t])} in a row < M={M}")


def coordinates(values, indices, offsets, M: int, K: int):
    """(row, col, position in values.reshape(-1)) of every stored entry (padding lanes
    left out: they have no column), int64 each."""
    S, KB = _grid(M, K)
    T = values.shape[0]
    dev = values.device
    if T == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return empty, empty, empty
    sb = _step_groups(offsets, S, KB, T, dev)
    lane = torch.arange(LANES, device=dev)
    row = (torch.div(sb, KB, rounding_mode="floor").unsqueeze(1) * LANES + lane).reshape(-1)
    col = ((sb % KB).unsqueeze(1) * BLOCK + indices.long()).reshape(-1)
    pos = torch.nonzero(indices.reshape(-1) != NONE).reshape(-1)
    return row[pos], col[pos], pos


def pattern_density(W: torch.Tensor, blocksize=None) -> Optional[float]:
    """Nonzeros / (M*K): every weight fits."""
    return float((W != 0).float().mean()) if W.numel() else 0.0


def sell_bytes(M: int, K: int, stored: int, elem: int = 4, blocksize=None) -> int:
    """SELL bytes: ``stored`` lanes (entries and padding: ``values.numel()``) of a value and a
    uint8 index each, + the offsets (int32; int64 past 2^31 - 1 steps)."""
    S, KB = _grid(M, K)
    off = 4 if stored // LANES <= 2**31 - 1 else 8
    return stored * (elem + 1) + (S * KB + 1) * off


def as_csc(values, indices, offsets, M: int, K: int):
    """The same matrix as CSC tensors ``(values, rows, colptr)``, cached per weight."""
    def build():
        check_structure(values, indices, offsets, M, K)  # the CSC kernels then check rows
        _, _, v, r, o = _csc_parts(values, indices, offsets, M, K)
        return v, r, o

    if values.is_inference() or indices.is_inference():
        return build()  # inference tensors carry no version counter to key a cache on
    return cached_repack(values, f"sell:as_csc:{M}x{K}", (indices, offsets), build)


def _csc_parts(values, indices, offsets, M: int, K: int):
    """(order, pos, csc values, csc rows, csc colptr): entry i of the CSC copy is SELL
    position pos[order[i]] (sorted by column, then row)."""
    row, col, pos = coordinates(values, indices, offsets, M, K)
    order = torch.argsort(col * max(M, 1) + row, stable=True)
    v = values.reshape(-1)[pos[order]].contiguous()
    r = row[order].to(row_index_dtype(M)).contiguous()
    colptr = torch.zeros(K + 1, dtype=torch.int64, device=values.device)
    colptr[1:] = torch.cumsum(torch.bincount(col, minlength=K), 0)
    o = colptr.to(torch.int32 if v.numel() <= 2**31 - 1 else torch.int64)
    return order, pos, v, r, o


def from_csc_grad(grad, values, indices, offsets, M: int, K: int) -> torch.Tensor:
    """The gradient for SELL ``values`` [T, 16] from one for :func:`as_csc`'s values [nnz]
    (0 in padding lanes)."""
    order, pos, _, _, _ = _csc_parts(values, indices, offsets, M, K)
    out = torch.zeros(values.numel(), dtype=grad.dtype, device=grad.device)
    out[pos[order]] = grad.reshape(-1)
    return out.reshape(values.shape)


LAYOUT = layouts.register(layouts.Layout(
    name="sell", format=SELL, check_meta=check_meta, check_structure=check_structure,
    coordinates=coordinates, magnitude_prune=prune_unstructured,
    pattern_density=pattern_density, nbytes=sell_bytes, default_max_density=0.3,
    any_pattern=True, max_batch=8, served_as=layouts.ServedAs("csc", as_csc, from_csc_grad)))

__all__ = ["SELL", "as_csc", "from_csc_grad", "sell_bytes"]
