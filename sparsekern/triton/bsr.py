"""Block-sparse (BSR) times dense on the GPU: ``out = A @ B (+ bias)``.

Kernel: one program per (block row, M sub-tile, N tile[, K split]). It walks the stored
blocks of its block row, loads each block and the B rows under it, and ``tl.dot``s them
into a float32 accumulator (the matmul tutorial's loop, with the K loop running over the
row's stored blocks instead of all of K). Any block shape works:

* ``bm`` larger than the tile BM: the block row is cut into ceil(bm/BM) sub-tiles (a
  decode launch uses BM = 16 on 64x64 blocks to get 4x the programs);
  ``bm`` smaller than BM (1, 8, 12...): rows past ``bm`` are masked (tensor-core
  efficiency bm/16; tl.dot needs 16 rows).
* ``bk`` at least BK/2: one block per step, cut into ceil(bk/BK) K sub-steps;
  ``bk`` below BK/2 (1, 4, 8...): BK // bk blocks share one step, their columns gathered.
* tails (bm, bk not powers of two, M, K not multiples of the block) are masked; B is never
  read past row K-1 and stored padding columns (k >= K) are masked on both operands.

Decode (N < 16) pads the N tile to 16 with masked loads (B is never copied). When the
launch has too few tiles to keep the GPU's memory system busy, each block row's list of
blocks is split among several programs (split-K, see configs.choose_split_k).

Performance bounds (H100, fp16, 90% block sparsity): for N = 4096 the kernel is compute
bound at about 10% of dense FLOPs with 64x64 blocks, so it is bounded near 10x over
cuBLAS, minus pipeline start-up of short block lists (~6 blocks per row at 4096^2) and
imperfect L2 reuse of B; for decode it is bound by reading 10% of the weight plus the
index array. The kernel never reads out of bounds even on corrupt index tensors (block
ranges are clamped to [0, nnzb), columns masked to [0, K)); the backend validates the
tensors once per weight and raises ValueError naming a bad index.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import register_fake, register_kernel, wrap_triton

from .configs import (INT32_LIMIT, autotuned, choose_split_k, n_class, needs_int64, regime,
                      sm_count, smallest_tile)
from .splitk import reduce_split_k, splitk_workspace
from .tiles import cdiv_nowrap, grouped_pid, split_range, store_tile


@triton.jit
def bsr_spmm_kernel(
    values_ptr,      # [nnzb, bm, bk] stored blocks, contiguous (row-major inside a block)
    indices_ptr,     # [nnzb] int32 block column of each stored block
    offsets_ptr,     # [ceil(M/bm) + 1] int32 first stored block of each block row
    b_ptr,           # [K, N] dense B, strides (stride_bk, stride_bn)
    bias_ptr,        # [M] bias in out's dtype (dummy pointer when HAS_BIAS is False)
    out_ptr,         # [M, N] output, strides (stride_om, stride_on)
    ws_ptr,          # [SPLIT_K, M, N] float32 partial sums (dummy when SPLIT_K == 1)
    M, N, K, nnzb,
    stride_bk, stride_bn, stride_om, stride_on,
    n_class,         # N rounded up to a power of two: autotune key only
    bm: tl.constexpr, bk: tl.constexpr,        # block shape of the format
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,                     # programs sharing one output tile over K
    IDX64: tl.constexpr,                       # 64-bit offsets (a tensor past 2^31 elements)
    BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,   # tile of the tl.dot
    GROUP_M: tl.constexpr,
):
    MSUB: tl.constexpr = (bm + BM - 1) // BM   # M sub-tiles per block row
    if IDX64:
        num_pid_m = cdiv_nowrap(M, bm) * MSUB
        num_pid_n = cdiv_nowrap(N, BN)
    else:
        num_pid_m = tl.cdiv(M, bm) * MSUB
        num_pid_n = tl.cdiv(N, BN)
    pid_m, pid_n = grouped_pid(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    pid_s = tl.program_id(1)

    brow = pid_m // MSUB
    r_blk = (pid_m % MSUB) * BM + tl.arange(0, BM)   # rows of this tile inside the block
    if IDX64:
        # 64-bit offsets: widen before forming rows and columns. brow * bm + r_blk passes
        # 2^31 on the padding rows of the last block row when M is near it (wrapped, they
        # would pass the `< M` mask); the products with the strides are then int64 too.
        brow = brow.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
    offs_m = brow * bm + r_blk
    row_in_block = r_blk < bm
    m_ok = row_in_block & (offs_m < M)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < N

    # Clamp the row's block range so corrupt offsets can never address outside values.
    start = tl.load(offsets_ptr + brow)
    end = tl.load(offsets_ptr + brow + 1)
    start = tl.minimum(tl.maximum(start, 0), nnzb)
    end = tl.minimum(tl.maximum(end, start), nnzb)
    if IDX64:  # the block steps below (s0 + t, hi * KSUB) may pass 2^31
        start = start.to(tl.int64)
        end = end.to(tl.int64)
    lo, hi = split_range(start, end, pid_s, SPLIT_K, 1)

    j = tl.arange(0, BK)
    a_rows = r_blk[:, None] * bk                  # offset of each tile row inside a block
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if BK >= 2 * bk:
        # Narrow blocks: BPS blocks side by side form one BK-wide step; column j belongs
        # to block t = j // bk of the step, at column c = j % bk inside it.
        BPS: tl.constexpr = BK // bk
        t = j // bk
        c = j % bk
        j_used = j < BPS * bk
        for s0 in range(lo, hi, BPS):
            blk = s0 + t
            if IDX64:  # widen blk and col before they are multiplied below
                blk = blk.to(tl.int64)
            ok = j_used & (blk < hi)
            col = tl.load(indices_ptr + blk, mask=ok, other=0)
            if IDX64:
                col = col.to(tl.int64)
            kk = col * bk + c
            ok = ok & (kk >= 0) & (kk < K)       # padding columns never contribute
            a = tl.load(values_ptr + blk[None, :] * (bm * bk) + a_rows + c[None, :],
                        mask=row_in_block[:, None] & ok[None, :], other=0.0)
            b = tl.load(b_ptr + kk[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                        mask=ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc)
    else:
        # Wide blocks: each block takes KSUB steps of BK columns.
        KSUB: tl.constexpr = (bk + BK - 1) // BK
        for it in range(lo * KSUB, hi * KSUB):   # int64 bounds under IDX64 (lo, hi are)
            blk = it // KSUB
            if IDX64:
                blk = tl.cast(blk, tl.int64)
            c = (it % KSUB) * BK + j
            col = tl.load(indices_ptr + blk)
            if IDX64:
                col = col.to(tl.int64)
            kk = col * bk + c
            ok = (kk >= 0) & (kk < K)
            if bk % BK != 0:
                ok = ok & (c < bk)
            a_mask = ok[None, :]
            if bm % BM != 0:
                a_mask = a_mask & row_in_block[:, None]
            a = tl.load(values_ptr + blk * (bm * bk) + a_rows + c[None, :], mask=a_mask,
                        other=0.0)
            b = tl.load(b_ptr + kk[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                        mask=ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc)

    store_tile(acc, offs_m, m_ok, offs_n, n_ok, M, N, bias_ptr, out_ptr, stride_om, stride_on,
               ws_ptr, pid_s, HAS_BIAS, SPLIT_K)


def bsr_split_k(M: int, N: int, nnzb: int, bm: int, bk: int, device) -> int:
    """Split-K for a BSR launch: from the smallest tiles any configuration uses."""
    reg = regime(N)
    BM = smallest_tile("bsr", reg, "BM", bm, bk)
    BN = smallest_tile("bsr", reg, "BN", bm, bk)
    BK = smallest_tile("bsr", reg, "BK", bm, bk)
    Mb = triton.cdiv(M, bm)
    tiles = Mb * triton.cdiv(bm, BM) * triton.cdiv(N, BN)
    blocks_per_row = nnzb // max(1, Mb)
    steps = blocks_per_row * triton.cdiv(bk, BK) if bk * 2 > BK else blocks_per_row // (BK // bk)
    return choose_split_k(tiles, steps, sm_count(device), "bsr", reg)


def triton_bsr(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, M: int,
               K: int, B: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor,
               split_k: int = 0) -> None:
    """out[M, N] = A @ B (+ bias[:, None]) for a BSR matrix A; writes ``out`` in place.

    Args:
        values: [nnzb, bm, bk] stored blocks, contiguous; dtype of B.
        indices: [nnzb] int32 block columns, contiguous. offsets: [ceil(M/bm)+1] int32.
        B: [K, N] any strides. bias: [M] in out's dtype or None.
        out: [M, N] any strides (written, never read).
        split_k: 0 picks a split from the shapes; s >= 1 forces s (tests use it).
    The caller has validated the index tensors (the kernel masks regardless).
    """
    nnzb, bm, bk = values.shape
    bm, bk = int(bm), int(bk)  # compile-time constants of the kernel (guards under tracing)
    N = B.shape[1]
    if bias is not None:  # the kernels read bias[m] at bias_ptr + m
        bias = bias.contiguous()
    S = split_k if split_k > 0 else bsr_split_k(M, N, nnzb, bm, bk, B.device)
    if S * M * N >= INT32_LIMIT:
        S = 1
    ws = splitk_workspace(S, M, N, B.device) if S > 1 else out
    kernel = autotuned(bsr_spmm_kernel, "bsr", regime(N), ["n_class", "M", "K", "SPLIT_K"],
                       bm=bm, bk=bk)

    def grid(meta):
        return (triton.cdiv(M, bm) * triton.cdiv(bm, meta["BM"]) * triton.cdiv(N, meta["BN"]), S)

    wrap_triton(kernel)[grid](
        values, indices, offsets, B, bias if bias is not None else out, out, ws,
        M, N, K, nnzb, B.stride(0), B.stride(1), out.stride(0), out.stride(1), n_class(N),
        bm=bm, bk=bk, HAS_BIAS=bias is not None, SPLIT_K=S,
        IDX64=needs_int64(values, B, out, sizes=(M + bm, N, K + bk, nnzb)))
    if S > 1:
        reduce_split_k(ws, bias, out)


# sparsekern::_triton_bsr: schema in sparsekern/_ops.py (as every op of the namespace); the
# kernel above serves CUDA tensors (and CPU ones under the Triton interpreter).
register_kernel("sparsekern::_triton_bsr", ("cpu", "cuda"), triton_bsr)
register_fake("sparsekern::_triton_bsr", lambda *args, **kwargs: None)
