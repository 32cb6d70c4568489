"""Block-sparse row (BSR) format with blocks of bm x bk.

Tensors (docs/ARCHITECTURE.md, "The op"):
    values:  [nnzb, bm, bk] stored blocks (dtype of W), each block row-major.
    indices: [nnzb] int32 block-column of each block, increasing within a block row.
    offsets: [ceil(M/bm) + 1] int32 block-row pointer.
Edge blocks are padded with zeros past M and K; no kernel reads B past row K-1.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import layouts
from .base import SparseFormat, check_dense_weight, scatter_entries
from .magnitude import check_prune_args, zero_smallest
from .validate import (ceil_div, check_indices_range, check_offsets, check_one_index_each,
                       shape_of)


#: Most elements one block may hold: a block larger than the weight pads it to one block, and
#: (2**31, 1) on a 6 x 10 weight asked for 80 GB. Real blocks are at most 256 x 256 (65536).
MAX_BLOCK_ELEMS = 2**24
#: Most blocks a BSR matrix may store: its offsets (and the kernels' block indices) are int32.
MAX_BLOCKS = 2**31 - 1


def _whole(b) -> bool:
    """An int (not a bool), or an integral float / 0-d integer tensor-like number."""
    if isinstance(b, bool) or isinstance(b, str):
        return False
    try:
        return isinstance(b, int) or float(b).is_integer()
    except (TypeError, ValueError, OverflowError):
        return False


def check_blocksize(blocksize) -> Tuple[int, int]:
    try:
        parts = tuple(blocksize)
        ok = len(parts) == 2 and all(_whole(b) for b in parts)
        bm, bk = (int(b) for b in parts) if ok else (0, 0)
    except (TypeError, ValueError, OverflowError):
        ok, bm, bk = False, 0, 0
    if not ok or bm < 1 or bk < 1:
        raise ValueError(f"blocksize must be two positive integers (bm, bk), got {blocksize!r}")
    if bm * bk > MAX_BLOCK_ELEMS:
        raise ValueError(f"blocksize={blocksize!r} makes blocks of {bm * bk} elements; at most "
                         f"{MAX_BLOCK_ELEMS} (2^24) per block are served")
    return bm, bk


def check_block_count(nnzb: int) -> None:
    """ValueError when ``nnzb`` stored blocks would not fit the int32 offsets."""
    if nnzb > MAX_BLOCKS:
        raise ValueError(f"bsr would store {nnzb} blocks; at most {MAX_BLOCKS} fit its "
                         f"int32 offsets: use larger blocks")


class BSR(SparseFormat):
    """Block-sparse matrix of logical shape [M, K] (see module docstring)."""

    layout = "bsr"

    @property
    def blocksize(self) -> Tuple[int, int]:
        return int(self.values.shape[1]), int(self.values.shape[2])

    def meta(self):
        m = super().meta()
        m["blocksize"] = list(self.blocksize)
        return m

    @classmethod
    def from_dense(cls, W: torch.Tensor, blocksize=(32, 32)) -> "BSR":
        """Pack W [M, K]: every bm x bk block holding a nonzero is stored whole."""
        check_dense_weight(W)
        bm, bk = check_blocksize(blocksize)
        M, K = W.shape
        Mb, Kb = ceil_div(M, bm), ceil_div(K, bk)
        Wp = torch.nn.functional.pad(W, (0, Kb * bk - K, 0, Mb * bm - M))
        blocks = Wp.reshape(Mb, bm, Kb, bk).permute(0, 2, 1, 3)  # [Mb, Kb, bm, bk]
        keep = (blocks != 0).flatten(2).any(-1)  # [Mb, Kb]
        rows, cols = keep.nonzero(as_tuple=True)
        # Before gathering the blocks: the int64 cumulative count below would otherwise be
        # stored silently truncated into the int32 offsets.
        check_block_count(rows.numel())
        values = blocks[rows, cols].contiguous()
        if values.numel() == 0:
            values = values.reshape(0, bm, bk)
        indices = cols.to(torch.int32).contiguous()
        counts = keep.sum(1)
        offsets = torch.zeros(Mb + 1, dtype=torch.int32, device=W.device)
        offsets[1:] = counts.cumsum(0)
        return cls(values, indices, offsets, (M, K), validate=False)

    def block_rows(self) -> torch.Tensor:
        """[nnzb] int64 block-row of each stored block."""
        Mb = self.offsets.shape[0] - 1
        counts = (self.offsets[1:] - self.offsets[:-1]).long()
        return torch.repeat_interleave(torch.arange(Mb, device=self.device), counts)

    def _dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit; a block
        column stored twice in a block row adds up, as in ``spmm``)."""
        M, K = self.shape
        bm, bk = self.blocksize
        Mb, Kb = ceil_div(M, bm), ceil_div(K, bk)
        out = torch.zeros(Mb, Kb, bm, bk, dtype=self.dtype, device=self.device)
        if self.values.shape[0]:
            brow, bcol = self.block_rows(), self.indices.long()
            scatter_entries(out, (brow, bcol), self.values, brow * Kb + bcol)
        return out.permute(0, 2, 1, 3).reshape(Mb * bm, Kb * bk)[:M, :K].contiguous()


def check_meta(values, indices, offsets, M: int, K: int) -> None:
    """Shapes and dtypes of the three BSR tensors (O(1))."""
    if values.dim() != 3:
        raise ValueError(f"bsr values has shape {shape_of(values)}; expected [nnzb, bm, bk]")
    nnzb, bm, bk = values.shape
    if bm < 1 or bk < 1:
        raise ValueError(f"bsr values has shape {shape_of(values)}: block size ({bm}, {bk}) "
                         f"must be positive")
    if indices.dtype != torch.int32 or indices.dim() != 1:
        raise ValueError(f"bsr indices has shape {shape_of(indices)} and dtype {indices.dtype}; "
                         f"expected int32 of shape [nnzb] = [{nnzb}]")
    check_one_index_each("bsr", values, indices, offsets, "blocks", "block-column indices")
    rows = ceil_div(M, bm)
    if offsets.dtype != torch.int32 or offsets.dim() != 1 or offsets.shape[0] != rows + 1:
        raise ValueError(f"bsr offsets has shape {shape_of(offsets)} and dtype {offsets.dtype}; "
                         f"expected int32 of shape [ceil(M/bm) + 1] = [{rows + 1}]")


def check_structure(values, indices, offsets, M: int, K: int) -> None:
    nnzb, bm, bk = values.shape
    check_offsets(offsets, nnzb, "bsr")
    check_indices_range(indices, ceil_div(K, bk), "bsr block-column")


def coordinates(values, indices, offsets, M: int, K: int):
    """(row, col, position in values) of every stored entry (padding included), int64."""
    dev = values.device
    nnzb, bm, bk = values.shape
    Mb = offsets.shape[0] - 1
    counts = (offsets[1:] - offsets[:-1]).long()
    brow = torch.repeat_interleave(torch.arange(Mb, device=dev), counts)
    i = torch.arange(bm, device=dev).view(1, bm, 1)
    j = torch.arange(bk, device=dev).view(1, 1, bk)
    row = (brow.view(-1, 1, 1) * bm + i).expand(nnzb, bm, bk).reshape(-1)
    col = (indices.long().view(-1, 1, 1) * bk + j).expand(nnzb, bm, bk).reshape(-1)
    return row, col, torch.arange(values.numel(), device=dev)


def prune_blocks(W: torch.Tensor, sparsity: float, blocksize: Tuple[int, int]) -> torch.Tensor:
    """Zero the weakest (L1 norm) ``round(sparsity * n_blocks)`` bm x bk blocks."""
    check_prune_args(W, sparsity)
    bm, bk = blocksize
    M, K = W.shape
    Mb, Kb = -(-M // bm), -(-K // bk)
    Wp = torch.nn.functional.pad(W, (0, Kb * bk - K, 0, Mb * bm - M))
    norms = Wp.reshape(Mb, bm, Kb, bk).abs().float().sum(dim=(1, 3))  # [Mb, Kb]
    keep = zero_smallest(norms, int(round(sparsity * Mb * Kb)))
    mask = keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    return W * mask.to(W.dtype)


def block_density(W: torch.Tensor, bm: int, bk: int) -> float:
    """Fraction of the bm x bk blocks of W [M, K] that hold a nonzero (edge blocks padded)."""
    M, K = W.shape
    if W.numel() == 0:
        return 0.0
    Mb, Kb = -(-M // bm), -(-K // bk)
    nz = torch.nn.functional.pad((W != 0).to(torch.int8), (0, Kb * bk - K, 0, Mb * bm - M))
    return float(nz.reshape(Mb, bm, Kb, bk).amax(dim=(1, 3)).float().mean())


def pattern_density(W: torch.Tensor, blocksize) -> Optional[float]:
    return block_density(W, *blocksize)


def bsr_bytes(M: int, K: int, stored: int, elem: int, blocksize: Tuple[int, int]) -> int:
    """BSR bytes: ``stored`` values in blocks of bm*bk + int32 block-column + row pointer."""
    bm, bk = blocksize
    nnzb = stored // (bm * bk)
    return nnzb * (bm * bk * elem + 4) + (-(-M // bm) + 1) * 4


LAYOUT = layouts.register(layouts.Layout(
    name="bsr", format=BSR, check_meta=check_meta, check_structure=check_structure,
    coordinates=coordinates, magnitude_prune=prune_blocks, pattern_density=pattern_density,
    nbytes=bsr_bytes, blocked=True, default_max_density=0.5,
    block_shapes=((4, 4), (16, 16), (32, 32))))
