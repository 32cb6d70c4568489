"""SELL-16x64 format: unstructured sparsity in row slices, for GEMV (decoding, N = 1-2).

Added by following docs/adding-a-layout.md; everything sparsekern knows about it is here.

Rows are cut into slices of 16 (the lanes of a zmm), columns into blocks of 64. For slice s
and column block b, the entries of the slice's 16 rows in the block's 64 columns are stored
as ``steps``: step t holds at most one entry per row (lane). A (slice, block) has as many
steps as its fullest row has entries there; lanes with fewer entries are padded.

Tensors (docs/ARCHITECTURE.md, "The op"), for a logical [M, K] with S = ceil(M/16) slices,
KB = ceil(K/64) blocks and G = S * KB groups (group g = s * KB + b):
    values:  [nnz] (dtype of W): the stored entries, group by group, step by step, lane by
             lane (padding lanes hold nothing).
    indices: [T, 16] uint8: lane l of step t is row 16 s + l; the index is the entry's
             column within its block (column 64 b + index), below the block's width (64;
             K - 64 (KB - 1) in the last block), or 255 for a lane without an entry. Lanes
             of rows >= M (the last slice) are 255.
    offsets: [G + 1, 2] int32 (int64 past 2^31 - 1 steps or values): group g owns steps
             offsets[g, 0] .. offsets[g + 1, 0] - 1 and values offsets[g, 1] ..
             offsets[g + 1, 1] - 1, one per lane below 255 of those steps.
:meth:`SELL.from_dense` stores each lane's entries in increasing column order and no more
steps than needed; the op accepts any order (entries of one position add up).

Why a layout of its own: at N = 1 a CSC (or CSR) kernel moves each activation with a
gather or a scatter, ~1 element per cycle; here a block's 64 activations sit in registers and
a step picks 16 at once, and its values are the next entries of the stream expanded into
their lanes (csrc/cpu/sell.cpp). Bytes per entry at 90% sparsity: 4 (float32 value) + ~1.7
(index lanes, padding included), against CSC's 6 (value + int16 row).

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


def _offsets(steps: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[G + 1, 2] offsets from the steps and the entries of each group (int32 when both
    totals fit)."""
    off = torch.zeros(steps.numel() + 1, 2, dtype=torch.int64, device=steps.device)
    off[1:, 0] = torch.cumsum(steps, 0)
    off[1:, 1] = torch.cumsum(counts, 0)
    small = off.numel() == 0 or int(off[-1].max()) <= 2**31 - 1
    return off.to(torch.int32 if small else torch.int64)


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
        block = torch.div(cols, BLOCK, rounding_mode="floor")
        group = rows * KB + block  # (row, block)
        counts = torch.bincount(group, minlength=M * KB)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(rows.numel(), device=dev) - first[group]  # step within its group
        per_lane = torch.nn.functional.pad(counts.reshape(M, KB), (0, 0, 0, S * LANES - M))
        per_lane = per_lane.reshape(S, LANES, KB)
        offsets = _offsets(per_lane.amax(1).reshape(-1), per_lane.sum(1).reshape(-1))
        T = int(offsets[-1, 0])
        sb = torch.div(rows, LANES, rounding_mode="floor") * KB + block
        lane_pos = (offsets[:, 0].long()[sb] + rank) * LANES + rows % LANES
        order = torch.argsort(lane_pos)  # values follow their lanes: step by step, lane by lane
        values = W[rows, cols][order].contiguous()
        indices = torch.full((T * LANES,), NONE, dtype=torch.uint8, device=dev)
        indices[lane_pos] = (cols % BLOCK).to(torch.uint8)
        return cls(values, indices.reshape(T, LANES), offsets, (M, K), validate=False)

    def _dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit; a position
        stored twice adds up, as in ``spmm``)."""
        M, K = self.shape
        out = torch.zeros(M, K, dtype=self.dtype, device=self.device)
        row, col, pos = coordinates(self.values, self.indices, self.offsets, M, K)
        if pos.numel():
            scatter_entries(out, (row, col), self.values[pos], row * K + col)
        return out


def check_meta(values, indices, offsets, M: int, K: int) -> None:
    """Shapes and dtypes of the three SELL tensors (O(1))."""
    S, KB = _grid(M, K)
    if values.dim() != 1:
        raise ValueError(f"sell values has shape {shape_of(values)}; expected [nnz]")
    if indices.dtype != torch.uint8:
        raise TypeError(f"sell indices has dtype {indices.dtype}; expected torch.uint8 "
                        f"(columns within 64-column blocks, 255 for no entry)")
    if indices.dim() != 2 or indices.shape[1] != LANES:
        raise ValueError(f"sell indices has shape {shape_of(indices)}; expected [steps, {LANES}]")
    if offsets.dtype not in (torch.int32, torch.int64) or offsets.dim() != 2 \
            or tuple(offsets.shape) != (S * KB + 1, 2):
        raise ValueError(f"sell offsets has shape {shape_of(offsets)} and dtype {offsets.dtype}; "
                         f"expected int32 or int64 of shape [ceil(M/16) * ceil(K/64) + 1, 2] = "
                         f"[{S * KB + 1}, 2] for M={M}, K={K}")


def _step_groups(offsets, T: int) -> torch.Tensor:
    """[T] int64: the group (slice * KB + block) of each step (offsets already checked)."""
    counts = (offsets[1:, 0] - offsets[:-1, 0]).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts,
                                   output_size=T)


def check_structure(values, indices, offsets, M: int, K: int) -> None:
    """Offsets; every index below its block's width or 255, 255 in rows >= M; each group's
    values one per lane with an entry."""
    S, KB = _grid(M, K)
    T = indices.shape[0]
    check_offsets(offsets, T, "sell", column=0, counted="steps (indices.shape[0])")
    check_offsets(offsets, values.shape[0], "sell", column=1, counted="values (values.shape[0])")
    if T == 0:
        return
    sb = _step_groups(offsets, T)
    width = (K - BLOCK * (sb % KB)).clamp(max=BLOCK)  # [T]
    row = torch.div(sb, KB, rounding_mode="floor").unsqueeze(1) * LANES + \
        torch.arange(LANES, device=indices.device)
    idx = indices.long()
    real = idx != NONE
    bad = real & ((idx >= width.unsqueeze(1)) | (row >= M))
    if bool(bad.any()):
        i = first_bad(bad.reshape(-1))
        t, lane = divmod(i, LANES)
        raise ValueError(
            f"sell indices[{t}, {lane}]={int(idx[t, lane])} is out of range for row "
            f"{int(row[t, lane])}, column block {int(sb[t]) % KB}; expected 255 (no entry) or "
            f"0 <= index < {int(width[t])} in a row < M={M}")
    per_group = torch.zeros(S * KB, dtype=torch.int64, device=indices.device)
    per_group.index_add_(0, sb, real.sum(1))
    wrong = per_group != (offsets[1:, 1] - offsets[:-1, 1]).long()
    if bool(wrong.any()):
        g = first_bad(wrong)
        raise ValueError(f"sell offsets[{g}:{g + 2}, 1] give group {g} "
                         f"{int(offsets[g + 1, 1] - offsets[g, 1])} values but its steps have "
                         f"{int(per_group[g])} lanes with an entry; expected one value per lane")


def coordinates(values, indices, offsets, M: int, K: int):
    """(row, col, position in values) of every stored entry, int64 each (structure checked:
    values follow the lanes with an entry in order)."""
    S, KB = _grid(M, K)
    T = indices.shape[0]
    dev = indices.device
    if T == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return empty, empty, empty
    sb = _step_groups(offsets, T)
    lane = torch.arange(LANES, device=dev)
    row = (torch.div(sb, KB, rounding_mode="floor").unsqueeze(1) * LANES + lane).reshape(-1)
    col = ((sb % KB).unsqueeze(1) * BLOCK + indices.long()).reshape(-1)
    real = torch.nonzero(indices.reshape(-1) != NONE).reshape(-1)
    return row[real], col[real], torch.arange(real.numel(), device=dev)


def pattern_density(W: torch.Tensor, blocksize=None) -> Optional[float]:
    """Nonzeros / (M*K): every weight fits."""
    return float((W != 0).float().mean()) if W.numel() else 0.0


def expected_lanes(nnz: int, M: int, K: int) -> float:
    """Index lanes (entries + padding) of ``nnz`` entries spread at random: per (slice,
    block), as many steps as its fullest row has entries there; for a row's Binomial(w, p)
    count the largest of 16 is about mean + 1.77 sd + 0.5 (normal order statistics)."""
    S, KB = _grid(M, K)
    if nnz <= 0 or S * KB == 0:
        return 0.0
    p = min(1.0, nnz / float(M * K))
    w = min(BLOCK, K)
    most = min(float(w), w * p + 1.77 * (w * p * (1 - p)) ** 0.5 + 0.5)
    return max(float(nnz), S * KB * LANES * most)


def sell_bytes(M: int, K: int, stored: int, elem: int = 4, blocksize=None) -> int:
    """SELL bytes of ``stored`` entries: their values, the uint8 index lanes (padding
    estimated by :func:`expected_lanes` for a random pattern; a real weight's are
    ``indices.numel()``) and the [G + 1, 2] int32 offsets."""
    S, KB = _grid(M, K)
    return int(stored * elem + expected_lanes(stored, M, K)) + (S * KB + 1) * 8


def as_csc(values, indices, offsets, M: int, K: int):
    """The same matrix as CSC tensors ``(values, rows, colptr)``, cached per weight."""
    return _cached_csc_parts(values, indices, offsets, M, K)[1]


def _cached_csc_parts(values, indices, offsets, M: int, K: int):
    """``(order, (csc values, rows, colptr))`` of :func:`_csc_parts`, built once per weight
    (its structure checked first) and cached on ``values``: the forward, both backward
    products and :func:`from_csc_grad` share it."""
    def build():
        check_structure(values, indices, offsets, M, K)  # the CSC kernels then check rows
        order, v, r, o = _csc_parts(values, indices, offsets, M, K)
        return order, (v, r, o)

    if values.is_inference() or indices.is_inference():
        return build()  # inference tensors carry no version counter to key a cache on
    return cached_repack(values, f"sell:as_csc:{M}x{K}", (indices, offsets), build)


def _csc_parts(values, indices, offsets, M: int, K: int):
    """(order, csc values, csc rows, csc colptr): entry i of the CSC copy is SELL value
    order[i] (sorted by column, then row)."""
    row, col, pos = coordinates(values, indices, offsets, M, K)
    order = pos[torch.argsort(col * max(M, 1) + row, stable=True)]
    v = values[order].contiguous()
    r = row[order].to(row_index_dtype(M)).contiguous()
    colptr = torch.zeros(K + 1, dtype=torch.int64, device=values.device)
    colptr[1:] = torch.cumsum(torch.bincount(col, minlength=K), 0)
    o = colptr.to(torch.int32 if v.numel() <= 2**31 - 1 else torch.int64)
    return order, v, r, o


def from_csc_grad(grad, values, indices, offsets, M: int, K: int) -> torch.Tensor:
    """The gradient for SELL ``values`` [nnz] from one for :func:`as_csc`'s values [nnz]."""
    order = _cached_csc_parts(values, indices, offsets, M, K)[0]
    out = torch.zeros(values.numel(), dtype=grad.dtype, device=grad.device)
    out[order] = grad.reshape(-1)
    return out


LAYOUT = layouts.register(layouts.Layout(
    name="sell", format=SELL, check_meta=check_meta, check_structure=check_structure,
    coordinates=coordinates, magnitude_prune=prune_unstructured,
    pattern_density=pattern_density, nbytes=sell_bytes, default_max_density=0.3,
    any_pattern=True, max_batch=2, served_as=layouts.ServedAs("csc", as_csc, from_csc_grad)))

__all__ = ["SELL", "as_csc", "from_csc_grad", "sell_bytes"]
