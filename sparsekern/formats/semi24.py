"""2:4 semi-structured format: two kept values in every group of 4 along K.

Tensors (docs/ARCHITECTURE.md, "The op"):
    values:  [M, Kp/2] (dtype of W), row-major; Kp = ceil(K/4)*4. Entries 2g and 2g+1 of a
             row are the kept values of group g, in increasing column order.
    indices: [M, ceil(Kp/8)] uint8. Each group has a nibble: bits 0-1 the position (0..3)
             of its first kept value, bits 2-3 that of the second (first < second). Group 2j
             is the low nibble of byte j, group 2j+1 the high nibble.
    offsets: empty int32 (unused).
A group with fewer than two nonzeros stores zeros at its lowest free positions; positions in
the padded columns (>= K) are never read by any kernel.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import layouts
from .base import SparseFormat, check_dense_weight
from .magnitude import check_prune_args, keep_top_in_groups
from .validate import semi24_meta_cols, semi24_padded_k, shape_of


def unpack_positions(indices: torch.Tensor, K: int) -> torch.Tensor:
    """[M, ceil(Kp/8)] uint8 -> [M, Kp/4, 2] int64 positions within each group."""
    G = semi24_padded_k(K) // 4
    nib = torch.stack((indices & 0x0F, indices >> 4), dim=-1)
    nib = nib.reshape(indices.shape[0], 2 * indices.shape[1])[:, :G]
    nib = nib.long()
    return torch.stack((nib & 3, nib >> 2), dim=-1)


def semi24_columns(indices: torch.Tensor, K: int) -> torch.Tensor:
    """Dense column of every entry of ``values``: [M, Kp/2] int64 (may be >= K in padding)."""
    # One lookup per metadata byte (its 4 kept columns among its 8) instead of unpacking
    # nibbles and positions as separate int64 tensors: 3x faster at 4096x4096 (132 -> 44 ms
    # on 2 threads), where the unpacking took longer than the backward's GEMM.
    M, J = indices.shape
    G = semi24_padded_k(K) // 4
    dev = indices.device
    b = torch.arange(256, device=dev)
    table = torch.stack((b & 3, (b >> 2) & 3, 4 + ((b >> 4) & 3), 4 + (b >> 6)), dim=1)
    cols = torch.index_select(table, 0, indices.reshape(-1).long()).view(M, J, 4)
    cols.add_(torch.arange(J, device=dev).mul_(8).view(1, J, 1))
    return cols.view(M, 4 * J)[:, :2 * G].contiguous()


class Semi24(SparseFormat):
    """2:4 semi-structured sparse matrix of logical shape [M, K] (see module docstring)."""

    layout = "2:4"

    @classmethod
    def from_dense(cls, W: torch.Tensor) -> "Semi24":
        """Pack W [M, K] (float, any device); its zeros must already be 2:4.

        Raises ValueError naming the first row/group with more than 2 nonzeros.
        """
        check_dense_weight(W)
        M, K = W.shape
        Kp = semi24_padded_k(K)
        G = Kp // 4
        Wp = torch.nn.functional.pad(W, (0, Kp - K)) if Kp != K else W
        groups = Wp.reshape(M, G, 4)
        nonzero = groups != 0  # NaN counts as nonzero
        count = nonzero.sum(-1)
        over = count > 2
        if bool(over.any()):
            r, g = (int(x) for x in over.nonzero()[0].tolist())
            cols = list(range(4 * g, min(4 * g + 4, K)))
            raise ValueError(
                f"W is not 2:4 sparse: row {r}, group {g} (columns {cols[0]}..{cols[-1]}) has "
                f"{int(count[r, g])} nonzeros; at most 2 of every 4 consecutive values along K "
                f"may be nonzero. Prune it first (sparsekern.prune) or use layout='bsr'/'csc'.")
        # Keep the nonzeros first, then the lowest free positions; order kept pairs by column.
        key = (~nonzero).to(torch.int16) * 4 + torch.arange(4, device=W.device, dtype=torch.int16)
        pos = key.argsort(dim=-1)[..., :2].sort(dim=-1).values  # [M, G, 2]
        values = groups.gather(-1, pos).reshape(M, 2 * G).contiguous()
        nib = (pos[..., 0] | (pos[..., 1] << 2)).to(torch.uint8)  # [M, G]
        if G % 2:
            nib = torch.nn.functional.pad(nib, (0, 1))
        meta = (nib[:, 0::2] | (nib[:, 1::2] << 4)).contiguous()
        assert meta.shape[1] == semi24_meta_cols(K)
        offsets = torch.empty(0, dtype=torch.int32, device=W.device)
        return cls(values, meta, offsets, (M, K), validate=False)

    def _dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit)."""
        M, K = self.shape
        Kp = semi24_padded_k(K)
        out = torch.zeros(M, Kp, dtype=self.values.dtype, device=self.values.device)
        if M and Kp:
            out.scatter_(1, semi24_columns(self.indices, K), self.values)
        return out[:, :K].contiguous()


def check_meta(values, indices, offsets, M: int, K: int) -> None:
    """Shapes and dtypes of the three 2:4 tensors (O(1))."""
    half = semi24_padded_k(K) // 2
    if values.dim() != 2 or values.shape[0] != M or values.shape[1] != half:
        raise ValueError(f"2:4 values has shape {shape_of(values)}; expected [M, ceil(K/4)*2] = "
                         f"[{M}, {half}] for M={M}, K={K}")
    if indices.dtype != torch.uint8:
        raise TypeError(f"2:4 indices has dtype {indices.dtype}; expected torch.uint8 "
                        f"(packed 2-bit positions)")
    mcols = semi24_meta_cols(K)
    if indices.dim() != 2 or indices.shape[0] != M or indices.shape[1] != mcols:
        raise ValueError(f"2:4 indices has shape {shape_of(indices)}; expected "
                         f"[M, ceil(K/8)] = [{M}, {mcols}] for M={M}, K={K}")
    if offsets.numel() != 0:
        raise ValueError(f"2:4 offsets must be empty, got shape {shape_of(offsets)}")


def check_structure(values, indices, offsets, M: int, K: int) -> None:
    """Each nibble holds two 2-bit positions; the first must be below the second."""
    if indices.numel() == 0:
        return
    lo = indices & 0x0F
    hi = indices >> 4
    G = semi24_padded_k(K) // 4
    for half, nib in ((0, lo), (1, hi)):
        p0, p1 = nib & 3, nib >> 2
        bad = p0 >= p1
        if half == 1 and G % 2 == 1:
            bad[:, -1] = False  # the unused high nibble of an odd group count
        if bool(bad.any()):
            r, c = (int(x) for x in bad.nonzero()[0].tolist())
            g = 2 * c + half
            raise ValueError(f"2:4 indices row {r}, group {g}: positions "
                             f"({int(p0[r, c])}, {int(p1[r, c])}) must be strictly increasing")


def coordinates(values, indices, offsets, M: int, K: int):
    """(row, col, position in values) of every stored entry (padding included), int64."""
    col = semi24_columns(indices, K).reshape(-1)
    row = torch.arange(M, device=values.device).repeat_interleave(values.shape[1])
    return row, col, torch.arange(values.numel(), device=values.device)


def prune_2to4(W: torch.Tensor, sparsity: float = 0.5, blocksize=None) -> torch.Tensor:
    """Keep the 2 largest |w| of every group of 4 along K (``sparsity`` is always 0.5)."""
    check_prune_args(W, 0.5)
    return keep_top_in_groups(W, 2, 4)


def is_semi24(W: torch.Tensor) -> bool:
    """Every group of 4 consecutive weights along K of W [M, K] holds at most 2 nonzeros."""
    M, K = W.shape
    if W.numel() == 0:
        return True
    Kp = -(-K // 4) * 4
    nz = torch.nn.functional.pad((W != 0).to(torch.int8), (0, Kp - K))
    return bool((nz.reshape(M, Kp // 4, 4).sum(-1) <= 2).all())


def pattern_density(W: torch.Tensor, blocksize=None) -> Optional[float]:
    return 0.5 if is_semi24(W) else None


def semi24_bytes(M: int, K: int, stored: Optional[int] = None, elem: int = 4,
                 blocksize=None) -> int:
    """2:4 format bytes: values [M, Kp/2] + uint8 metadata [M, ceil(Kp/8)] (no offsets)."""
    Kp = -(-K // 4) * 4
    return M * (Kp // 2) * elem + M * (-(-Kp // 8))


LAYOUT = layouts.register(layouts.Layout(
    name="2:4", format=Semi24, check_meta=check_meta, check_structure=check_structure,
    coordinates=coordinates, magnitude_prune=prune_2to4, pattern_density=pattern_density,
    nbytes=semi24_bytes, fixed_density=0.5, group=(2, 4)))
