"""Split-K reduction: out = sum of the float32 partial tiles (+ bias), in a fixed order.

When a launch has too few output tiles to fill the GPU (decode shapes on a small M), each
tile is computed by SPLIT_K programs over disjoint slices of K; they write float32 partial
sums to a workspace and this kernel adds them up in split order (deterministic, no
atomics), adds the bias and writes ``out`` with its own strides and dtype. The cost is one
more launch and 4 * SPLIT_K * M * N bytes of traffic, small for the N <= 16 shapes that
split.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .configs import is_interpreter, needs_int64


@triton.jit
def splitk_reduce_kernel(
    ws_ptr,          # [SPLIT_K, M, N] float32, contiguous partial sums
    bias_ptr,        # [M] bias (out's dtype) or a dummy pointer when HAS_BIAS is False
    out_ptr,         # [M, N] output, any strides
    M, N,
    stride_om, stride_on,
    SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IDX64: tl.constexpr,  # out's offsets may reach 2^31 (the workspace's never do)
    BM: tl.constexpr, BN: tl.constexpr,
):
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    if IDX64:  # so that both products with out's strides are formed in int64
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    m_ok = offs_m < M
    mask = m_ok[:, None] & (offs_n[None, :] < N)
    tile = offs_m[:, None] * N + offs_n[None, :]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):  # fixed order: the same bits on every run
        acc += tl.load(ws_ptr + s * M * N + tile, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_m, mask=m_ok, other=0.0).to(tl.float32)[:, None]
    ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def splitk_workspace(split_k: int, M: int, N: int, device) -> torch.Tensor:
    """The [split_k, M, N] float32 workspace (every element the kernels read is written)."""
    return torch.empty((split_k, M, N), dtype=torch.float32, device=device)


def reduce_split_k(ws: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor) -> None:
    """out[M, N] = ws.sum(0) (+ bias[:, None]); ws [S, M, N] float32 contiguous."""
    S, M, N = ws.shape
    if is_interpreter():
        BM, BN = 16, 16
    else:  # memory bound: ~4K elements per program, N tile no wider than N
        BN = min(64, triton.next_power_of_2(N))
        BM = min(256, max(16, 4096 // BN))
    grid = (triton.cdiv(M, BM), triton.cdiv(N, BN))
    wrap_triton(splitk_reduce_kernel)[grid](
        ws, bias if bias is not None else out, out, M, N, out.stride(0), out.stride(1),
        SPLIT_K=S, HAS_BIAS=bias is not None, IDX64=needs_int64(out), BM=BM, BN=BN)
