"""1:4 semi-structured format: at most one nonzero in every group of 4 along K (75% sparse).

Added by following docs/adding-a-layout.md; everything sparsekern knows about 1:4 is here.

Tensors (docs/ARCHITECTURE.md, "The op"):
    values:  [M, Kp/4] (dtype of W), row-major; Kp = ceil(K/4)*4. Entry g of a row is the
             kept value of group g (0 when the group is empty).
    indices: [M, ceil(Kp/16)] uint8. Each group has 2 bits, the position (0..3) of its kept
             value: group g sits at bits 2*(g%4) .. 2*(g%4)+1 of byte g//4. Every bit
             pattern is a valid position; positions in the padded columns (>= K) are never
             read.
    offsets: empty int32 (unused).

Kernels: the forward has its own, csrc/cpu/nm14.cpp (a GEMV for N == 1, a panel kernel for
N > 1), run by the C++ fast path of ``sparsekern::spmm`` (nothing cached; every ISA). Calls
that take the Python path (a forced backend, autograd, the backward products) go on as before: the
reference backend serves it from :func:`coordinates`; the CPU backend runs the 2:4 kernel on
:func:`as_semi24`, a 2:4 copy (each group's kept value plus one stored zero) built once per
weight and cached on ``values`` (never per call; dropped when the weight changes, by bytes;
weights made inside ``torch.inference_mode`` get their copy rebuilt on every call, ~1-3 ms
at 1536x384, rather than risk a stale one). The backward products use the 2:4 copy too.
Triton and CUDA do not serve it (those calls go to the reference).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import layouts
from .base import SparseFormat, cached_repack, check_dense_weight
from .magnitude import check_prune_args, keep_top_in_groups
from .validate import ceil_div, semi24_meta_cols, shape_of


def _groups(K: int) -> int:
    return ceil_div(K, 4)


def _meta_cols(K: int) -> int:
    """Bytes of 1:4 metadata per row: 2 bits per group of 4, four groups per byte."""
    return ceil_div(_groups(K), 4)


def unpack_positions(indices: torch.Tensor, K: int) -> torch.Tensor:
    """[M, ceil(G/4)] uint8 -> [M, G] int64 position of each group's kept value."""
    G = _groups(K)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=indices.device)
    pos = (indices.unsqueeze(-1) >> shifts) & 3  # [M, ceil(G/4), 4]
    return pos.reshape(indices.shape[0], 4 * indices.shape[1])[:, :G].long()


class NM14(SparseFormat):
    """1:4 semi-structured sparse matrix of logical shape [M, K] (see module docstring)."""

    layout = "1:4"

    @classmethod
    def from_dense(cls, W: torch.Tensor) -> "NM14":
        """Pack W [M, K]; its zeros must already be 1:4 (ValueError naming the first group
        with more than one nonzero)."""
        check_dense_weight(W)
        M, K = W.shape
        G = _groups(K)
        groups = torch.nn.functional.pad(W, (0, 4 * G - K)).reshape(M, G, 4)
        nonzero = groups != 0  # NaN counts as nonzero
        count = nonzero.sum(-1)
        if bool((count > 1).any()):
            r, g = (int(x) for x in (count > 1).nonzero()[0].tolist())
            raise ValueError(
                f"W is not 1:4 sparse: row {r}, group {g} (columns {4 * g}..{min(4 * g + 3, K - 1)})"
                f" has {int(count[r, g])} nonzeros; at most 1 of every 4 consecutive values along"
                f" K may be nonzero. Prune it first (sparsekern.prune) or use layout='2:4'/'csc'.")
        pos = nonzero.to(torch.int8).argmax(-1)  # the nonzero, or 0 in an empty group
        values = groups.gather(-1, pos.unsqueeze(-1)).squeeze(-1).contiguous()
        pos = torch.nn.functional.pad(pos.to(torch.uint8), (0, 4 * _meta_cols(K) - G))
        pos = pos.reshape(M, _meta_cols(K), 4)
        meta = (pos[..., 0] | (pos[..., 1] << 2) | (pos[..., 2] << 4) | (pos[..., 3] << 6))
        offsets = torch.empty(0, dtype=torch.int32, device=W.device)
        return cls(values, meta.contiguous(), offsets, (M, K), validate=False)

    def _dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (stored values bit for bit)."""
        M, K = self.shape
        out = torch.zeros(M, 4 * _groups(K), dtype=self.dtype, device=self.device)
        if M and K:
            cols = unpack_positions(self.indices, K) + 4 * torch.arange(_groups(K),
                                                                        device=self.device)
            out.scatter_(1, cols, self.values)
        return out[:, :K].contiguous()


def check_meta(values, indices, offsets, M: int, K: int) -> None:
    """Shapes and dtypes of the three 1:4 tensors (O(1))."""
    G, mcols = _groups(K), _meta_cols(K)
    if values.dim() != 2 or values.shape[0] != M or values.shape[1] != G:
        raise ValueError(f"1:4 values has shape {shape_of(values)}; expected [M, ceil(K/4)] = "
                         f"[{M}, {G}] for M={M}, K={K}")
    if indices.dtype != torch.uint8:
        raise TypeError(f"1:4 indices has dtype {indices.dtype}; expected torch.uint8 "
                        f"(packed 2-bit positions)")
    if indices.dim() != 2 or indices.shape[0] != M or indices.shape[1] != mcols:
        raise ValueError(f"1:4 indices has shape {shape_of(indices)}; expected "
                         f"[M, ceil(K/16)] = [{M}, {mcols}] for M={M}, K={K}")
    if offsets.numel() != 0:
        raise ValueError(f"1:4 offsets must be empty, got shape {shape_of(offsets)}")


def check_structure(values, indices, offsets, M: int, K: int) -> None:
    """Nothing to read: every 2-bit position is a column of its own group."""


def coordinates(values, indices, offsets, M: int, K: int):
    """(row, col, position in values) of every stored entry (padding included), int64."""
    G = _groups(K)
    dev = values.device
    col = (unpack_positions(indices, K) + 4 * torch.arange(G, device=dev)).reshape(-1)
    row = torch.arange(M, device=dev).repeat_interleave(G)
    return row, col, torch.arange(values.numel(), device=dev)


def prune_1to4(W: torch.Tensor, sparsity: float = 0.75, blocksize=None) -> torch.Tensor:
    """Keep the largest |w| of every group of 4 along K (``sparsity`` is always 0.75)."""
    check_prune_args(W, 0.75)
    return keep_top_in_groups(W, 1, 4)


def pattern_density(W: torch.Tensor, blocksize=None) -> Optional[float]:
    """0.25 when every group of 4 along K of W [M, K] holds at most one nonzero, else None."""
    M, K = W.shape
    nz = torch.nn.functional.pad((W != 0).to(torch.int8), (0, 4 * _groups(K) - K))
    return 0.25 if bool((nz.reshape(M, _groups(K), 4).sum(-1) <= 1).all()) else None


def nm14_bytes(M: int, K: int, stored: Optional[int] = None, elem: int = 4,
               blocksize=None) -> int:
    """values [M, ceil(K/4)] + uint8 metadata [M, ceil(K/16)]."""
    return M * _groups(K) * elem + M * _meta_cols(K)


def as_semi24(values, indices, offsets, M: int, K: int):
    """The same matrix as 2:4 tensors ``(values24, indices24, offsets)``, cached per weight.

    Group g keeps positions (0, p) when its 1:4 position p > 0 (the value in the second
    slot, a stored zero in the first) and (0, 1) when p == 0 (the value in the first slot).
    """
    def build():
        G = _groups(K)
        p = unpack_positions(indices, K)  # [M, G]
        second = p > 0
        v24 = torch.zeros(M, G, 2, dtype=values.dtype, device=values.device)
        v24.scatter_(2, second.long().unsqueeze(-1), values.unsqueeze(-1))
        nib = torch.where(second, p << 2, torch.full_like(p, 1 << 2)).to(torch.uint8)
        nib = torch.nn.functional.pad(nib, (0, 2 * semi24_meta_cols(K) - G))
        meta = (nib[:, 0::2] | (nib[:, 1::2] << 4)).contiguous()
        return v24.reshape(M, 2 * G).contiguous(), meta, offsets.contiguous()

    if values.is_inference() or indices.is_inference():
        return build()  # inference tensors carry no version counter to key a cache on
    return cached_repack(values, f"nm14:as_semi24:{M}x{K}", (indices,), build)


def from_semi24_grad(grad24: torch.Tensor, values, indices, offsets, M: int,
                     K: int) -> torch.Tensor:
    """The gradient for 1:4 ``values`` [M, G] from one for :func:`as_semi24`'s [M, 2G]."""
    M = grad24.shape[0]
    second = (unpack_positions(indices, K) > 0).long()
    return grad24.reshape(M, _groups(K), 2).gather(2, second.unsqueeze(-1)).squeeze(-1)


LAYOUT = layouts.register(layouts.Layout(
    name="1:4", format=NM14, check_meta=check_meta, check_structure=check_structure,
    coordinates=coordinates, magnitude_prune=prune_1to4, pattern_density=pattern_density,
    nbytes=nm14_bytes, fixed_density=0.25, group=(1, 4),
    served_as=layouts.ServedAs("2:4", as_semi24, from_semi24_grad)))
