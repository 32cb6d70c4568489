"""Reference backend: pure PyTorch, any device, float64-capable.

The oracle of every test and the fallback when no faster backend serves a case. Every
layout is expanded to coordinate form (row, column, position in ``values``) and the
product is accumulated with ``index_add_`` in chunks, so memory stays bounded. Every
stored entry contributes, so NaN/Inf in B propagate through stored zeros too (as in
torch.sparse and scipy.sparse); entries outside [M, K] (format padding) never contribute.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..formats import layouts
from ..formats.validate import check_format_structure

name = "reference"

#: Entries times N processed per chunk (bounds the temporary [chunk, N] product).
_CHUNK_ELEMENTS = 1 << 22


def available() -> Tuple[bool, str]:
    return True, ""


def supports(layout: str, values_dtype: torch.dtype, B_dtype: torch.dtype,
             device: torch.device) -> bool:
    return layout in layouts.names()  # every registered layout, from its coordinates


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def coordinates(values, indices, offsets, M: int, K: int, layout: str):
    """Coordinate form of a format: (row, col, flat position in values), inside [M, K] only
    (each layout's ``coordinates``, sparsekern/formats/layouts.py, minus the padding).

    Returns three int64 tensors of equal length.
    """
    row, col, pos = layouts.get(layout).coordinates(values, indices, offsets, M, K)
    inside = (row < M) & (col < K)
    if not bool(inside.all()):
        row, col, pos = row[inside], col[inside], pos[inside]
    return row, col, pos


def _chunks(n_entries: int, N: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, N))
    for s in range(0, n_entries, step):
        yield s, min(n_entries, s + step)


def spmm(values, indices, offsets, M: int, K: int, layout: str, B: torch.Tensor,
         bias: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """out[M, N] = A @ B (+ bias[:, None]); A given by its format tensors."""
    check_format_structure(values, indices, offsets, M, K, layout)
    acc_t = accumulate_dtype(values.dtype)
    N = B.shape[1]
    acc = torch.zeros(M, N, dtype=acc_t, device=B.device)
    row, col, pos = coordinates(values, indices, offsets, M, K, layout)
    flat = values.reshape(-1)
    for s, e in _chunks(row.numel(), N):
        v = flat[pos[s:e]].to(acc_t)
        acc.index_add_(0, row[s:e], v.unsqueeze(1) * B[col[s:e]].to(acc_t))
    if bias is not None:
        acc += bias.to(acc_t).unsqueeze(1)
    out.copy_(acc)
    return out


def spmm_transposed(values, indices, offsets, M: int, K: int, layout: str,
                    G: torch.Tensor) -> torch.Tensor:
    """A.T @ G for G [M, N]: [K, N] in G's dtype (the gradient of spmm for B)."""
    check_format_structure(values, indices, offsets, M, K, layout)
    acc_t = accumulate_dtype(G.dtype)
    N = G.shape[1]
    acc = torch.zeros(K, N, dtype=acc_t, device=G.device)
    row, col, pos = coordinates(values, indices, offsets, M, K, layout)
    flat = values.reshape(-1)
    for s, e in _chunks(row.numel(), N):
        v = flat[pos[s:e]].to(acc_t)
        acc.index_add_(0, col[s:e], v.unsqueeze(1) * G[row[s:e]].to(acc_t))
    return acc.to(G.dtype)


def sampled_dot(values, indices, offsets, M: int, K: int, layout: str, G: torch.Tensor,
                B: torch.Tensor) -> torch.Tensor:
    """(G @ B.T) sampled at the stored entries, in ``values``' shape (grad for values).

    Entries in the format's padding get 0.
    """
    check_format_structure(values, indices, offsets, M, K, layout)
    acc_t = accumulate_dtype(values.dtype)
    grad = torch.zeros(values.numel(), dtype=acc_t, device=values.device)
    row, col, pos = coordinates(values, indices, offsets, M, K, layout)
    N = B.shape[1]
    for s, e in _chunks(row.numel(), N):
        d = (G[row[s:e]].to(acc_t) * B[col[s:e]].to(acc_t)).sum(1)
        grad.index_copy_(0, pos[s:e], d)
    return grad.to(values.dtype).reshape(values.shape)


def attention_scores(q, k, mask, scale: float) -> torch.Tensor:
    """softmax(scale * q @ k.T + mask) [B, H, Sq, Sk] in float32 (float64 for float64 q).

    q [B, H, Sq, D]; k [B, Hkv, Sk, D] with H % Hkv == 0 (query head h reads key head
    h // (H // Hkv)); mask bool (True takes part) or additive, broadcastable to
    [B, H, Sq, Sk], or None. A row whose scores are all -inf (fully masked) is 0, as in
    scaled_dot_product_attention; a NaN score makes its row NaN.
    """
    acc_t = accumulate_dtype(q.dtype)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    s = torch.matmul(q.to(acc_t), k.to(acc_t).transpose(-2, -1)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=acc_t, device=s.device).masked_fill(
                ~mask, float("-inf"))
        s = s + mask.to(acc_t)
    p = torch.softmax(s, -1)
    if s.shape[-1] == 0:  # no keys: nothing to mask (the product with v is 0)
        return p
    return p.masked_fill(s.amax(-1, keepdim=True) == float("-inf"), 0.0)


def attention(q, k, v, mask, scale: float) -> torch.Tensor:
    """sparsekern::attention's formula: softmax(scale * q @ k.T + mask) @ v.

    q [B, H, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv] (see attention_scores); returns
    [B, H, Sq, Dv] in q's dtype, stored as [B, Sq, H, Dv] (its transpose(1, 2) is contiguous).
    """
    p = attention_scores(q, k, mask, scale)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
    out = torch.matmul(p, v.to(p.dtype)).to(q.dtype)
    return out.transpose(1, 2).contiguous().transpose(1, 2)
