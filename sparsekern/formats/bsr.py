"""Block-sparse row (BSR) format with blocks of bm x bk.

Tensors (DESIGN.md, "The op"):
    values:  [nnzb, bm, bk] stored blocks (dtype of W), each block row-major.
    indices: [nnzb] int32 block-column of each block, increasing within a block row.
    offsets: [ceil(M/bm) + 1] int32 block-row pointer.
Edge blocks are padded with zeros past M and K; no kernel reads B past row K-1.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .base import SparseFormat, check_dense_weight
from .validate import ceil_div


def check_blocksize(blocksize) -> Tuple[int, int]:
    try:
        bm, bk = (int(b) for b in blocksize)
        ok = all(isinstance(b, int) or float(b).is_integer() for b in blocksize)
    except (TypeError, ValueError):
        ok = False
    if not ok or bm < 1 or bk < 1:
        raise ValueError(f"blocksize must be two positive integers (bm, bk), got {blocksize!r}")
    return bm, bk


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

    def to_dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit)."""
        M, K = self.shape
        bm, bk = self.blocksize
        Mb, Kb = ceil_div(M, bm), ceil_div(K, bk)
        out = torch.zeros(Mb, Kb, bm, bk, dtype=self.dtype, device=self.device)
        if self.values.shape[0]:
            out[self.block_rows(), self.indices.long()] = self.values
        return out.permute(0, 2, 1, 3).reshape(Mb * bm, Kb * bk)[:M, :K].contiguous()
