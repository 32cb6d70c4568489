"""2:4 semi-structured times dense on the GPU: ``out = A @ B (+ bias)``.

Mainline Triton has no sparse ``tl.dot`` (no ``mma.sp``), so this kernel wins where the
product is memory bound (decode, N <= 16): it reads the compressed weight (half the values
plus 2 bits of position per value: 2.125 bytes per dense fp16 pair of columns instead of 4)
and expands each [BM, BK] tile in registers before a dense ``tl.dot``:

    values [BM, BK/2] --reshape/split--> first, second kept value of each group [BM, BK/4]
    meta   [BM, BK/8] --nibbles--------> positions p0, p1 of each group       [BM, BK/4]
    dense[:, 4g + p] = first if p == p0, second if p == p1, else 0  --join--> [BM, BK]

Bound (H100, fp16): dense GEMV reads 2 bytes per weight, this kernel 1.0625, so at most
~1.88x over cuBLAS at N <= 16, less the expansion's ALU work, the B tile each program
re-reads from L2 (K*N*2 bytes per BM rows: at N = 16 and BM = 16 as many bytes as the
weight itself, which is why BM = 32 is among the decode tiles) and the launch. At large N
it does the dense FLOPs plus the expansion and is slower than cuBLAS (sparse tensor cores,
the cuda backend, serve that). Only stored entries meet B (see tiles.py for NaN/Inf);
padding columns k >= K are dropped in the expansion and B is never read past row K-1.
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
from .tiles import (cdiv_nowrap, finite_part, grouped_pid, nonfinite_products, split_range,
                    store_tile)


@triton.jit
def expand_semi24(v, meta, k0, K, BM: tl.constexpr, BK: tl.constexpr):
    """Dense [BM, BK] tile from one compressed 2:4 tile (zeros where nothing is stored).

    v: [BM, BK/2] kept values (entries 2g, 2g+1 belong to group g); meta: [BM, BK/8] uint8,
    group 2q in the low nibble of byte q, group 2q+1 in the high one; k0: first dense
    column of the tile. Positions at columns >= K (format padding) are dropped.
    """
    G: tl.constexpr = BK // 4
    first, second = tl.split(tl.reshape(v, (BM, G, 2)))
    meta = meta.to(tl.int32)
    nib = tl.reshape(tl.join(meta & 15, meta >> 4), (BM, G))
    col0 = k0 + 4 * tl.arange(0, G)
    p0 = nib & 3
    p1 = (nib >> 2) & 3
    p0 = tl.where(col0[None, :] + p0 < K, p0, 4)  # 4 matches no position
    p1 = tl.where(col0[None, :] + p1 < K, p1, 4)
    zero = tl.zeros_like(first)
    d0 = tl.where(p0 == 0, first, tl.where(p1 == 0, second, zero))
    d1 = tl.where(p0 == 1, first, tl.where(p1 == 1, second, zero))
    d2 = tl.where(p0 == 2, first, tl.where(p1 == 2, second, zero))
    d3 = tl.where(p0 == 3, first, tl.where(p1 == 3, second, zero))
    # join(join(d0, d2), join(d1, d3)) orders the last two axes so that column 4g + p
    # comes from d_p after the reshape.
    dense = tl.reshape(tl.join(tl.join(d0, d2), tl.join(d1, d3)), (BM, BK))
    return dense


@triton.jit
def semi24_spmm_kernel(
    values_ptr,      # [M, Kp/2] kept values, row stride stride_vm, unit column stride
    meta_ptr,        # [M, ceil(Kp/8)] uint8 packed 2-bit positions, row stride stride_mm
    b_ptr,           # [K, N] dense B, strides (stride_bk, stride_bn)
    bias_ptr,        # [M] bias in out's dtype (dummy pointer when HAS_BIAS is False)
    out_ptr,         # [M, N] output, strides (stride_om, stride_on)
    ws_ptr,          # [SPLIT_K, M, N] float32 partial sums (dummy when SPLIT_K == 1)
    M, N, K,
    n_vals, n_meta,  # values per row (Kp/2) and metadata bytes per row (ceil(Kp/8))
    stride_vm, stride_mm, stride_bk, stride_bn, stride_om, stride_on,
    n_class,         # N rounded up to a power of two: autotune key only
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    IDX64: tl.constexpr,
    BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,   # BK counts dense columns
    GROUP_M: tl.constexpr,
):
    if IDX64:
        num_pid_m = cdiv_nowrap(M, BM)
        num_pid_n = cdiv_nowrap(N, BN)
        # int64 K tiles: the loops' k0 + jk and hi * BK then are int64 too.
        num_kt = tl.cast(cdiv_nowrap(K, BK), tl.int64)
    else:
        num_pid_m = tl.cdiv(M, BM)
        num_pid_n = tl.cdiv(N, BN)
        num_kt = tl.cdiv(K, BK)
    pid_m, pid_n = grouped_pid(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    pid_s = tl.program_id(1)
    if IDX64:
        # 64-bit offsets: widen the tile indices before any index is formed from them, so
        # rows, columns and their products with the strides (B, out) are all int64.
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
    offs_m = pid_m * BM + tl.arange(0, BM)
    m_ok = offs_m < M
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < N

    lo, hi = split_range(0, num_kt, pid_s, SPLIT_K, 1)
    jv = tl.arange(0, BK // 2)
    jm = tl.arange(0, BK // 8)
    jk = tl.arange(0, BK)
    v_rows = values_ptr + offs_m[:, None] * stride_vm
    m_rows = meta_ptr + offs_m[:, None] * stride_mm

    acc = tl.zeros((BM, BN), dtype=tl.float32)
    any_bad = tl.program_id(0) * 0   # int32 scalar: was a NaN/Inf seen in B?
    for kt in range(lo, hi):
        k0 = kt * BK
        if IDX64:  # kk = k0 + jk and its product with stride_bk are formed in int64
            k0 = tl.cast(k0, tl.int64)
        cv = k0 // 2 + jv
        cm = k0 // 8 + jm
        v = tl.load(v_rows + cv[None, :], mask=m_ok[:, None] & (cv < n_vals)[None, :], other=0.0)
        meta = tl.load(m_rows + cm[None, :], mask=m_ok[:, None] & (cm < n_meta)[None, :],
                       other=0)
        a = expand_semi24(v, meta, k0, K, BM, BK)
        kk = k0 + jk
        b = tl.load(b_ptr + kk[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                    mask=(kk < K)[:, None] & n_ok[None, :], other=0.0)
        b, bad = finite_part(b)
        any_bad = tl.maximum(any_bad, bad)
        acc = tl.dot(a, b, acc)

    if any_bad > 0:
        # Rare: B holds NaN/Inf. Walk this split's columns one at a time and add the
        # products of the stored entries with B's non-finite values (few registers, slow).
        extra = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(lo * BK, tl.minimum(hi * BK, K)):
            kb = k
            if IDX64:  # as k0 above: k * stride_bk is formed in int64
                kb = tl.cast(k, tl.int64)
            g = k // 4
            nib = tl.load(meta_ptr + offs_m * stride_mm + g // 2, mask=m_ok, other=0).to(tl.int32)
            nib = (nib >> ((g % 2) * 4)) & 15
            p0 = nib & 3
            p1 = (nib >> 2) & 3
            first = tl.load(values_ptr + offs_m * stride_vm + 2 * g, mask=m_ok, other=0.0)
            second = tl.load(values_ptr + offs_m * stride_vm + 2 * g + 1, mask=m_ok, other=0.0)
            v = tl.where(p0 == k % 4, first, second)
            stored = (p0 == k % 4) | (p1 == k % 4)
            b = tl.load(b_ptr + kb * stride_bk + offs_n * stride_bn, mask=n_ok, other=0.0)
            hit = stored[:, None] & ~(tl.abs(b) < float("inf"))[None, :]
            extra += nonfinite_products(v[:, None], b[None, :], hit)
        acc += extra

    store_tile(acc, offs_m, m_ok, offs_n, n_ok, M, N, bias_ptr, out_ptr, stride_om, stride_on,
               ws_ptr, pid_s, HAS_BIAS, SPLIT_K)


def semi24_split_k(M: int, N: int, K: int, device) -> int:
    """Split-K for a 2:4 launch: from the smallest tiles any configuration uses."""
    reg = regime(N)
    BM = smallest_tile("semi24", reg, "BM")
    BN = smallest_tile("semi24", reg, "BN")
    BK = smallest_tile("semi24", reg, "BK")
    tiles = triton.cdiv(M, BM) * triton.cdiv(N, BN)
    return choose_split_k(tiles, triton.cdiv(K, BK), sm_count(device), "semi24", reg)


def triton_semi24(values: torch.Tensor, indices: torch.Tensor, M: int, K: int, B: torch.Tensor,
                  bias: Optional[torch.Tensor], out: torch.Tensor, split_k: int = 0) -> None:
    """out[M, N] = A @ B (+ bias[:, None]) for a 2:4 matrix A; writes ``out`` in place.

    Args:
        values: [M, Kp/2] kept values (Kp = ceil(K/4)*4), unit column stride; dtype of B.
        indices: [M, ceil(Kp/8)] uint8 metadata (sparsekern.formats.semi24), unit column
            stride. B: [K, N] any strides. bias: [M] in out's dtype or None.
        out: [M, N] any strides (written, never read).
        split_k: 0 picks a split from the shapes; s >= 1 forces s (tests use it).
    """
    N = B.shape[1]
    if bias is not None:  # the kernels read bias[m] at bias_ptr + m
        bias = bias.contiguous()
    S = split_k if split_k > 0 else semi24_split_k(M, N, K, B.device)
    if S * M * N >= INT32_LIMIT:
        S = 1
    ws = splitk_workspace(S, M, N, B.device) if S > 1 else out
    kernel = autotuned(semi24_spmm_kernel, "semi24", regime(N), ["n_class", "M", "K", "SPLIT_K"])

    def grid(meta):
        return (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]), S)

    wrap_triton(kernel)[grid](
        values, indices, B, bias if bias is not None else out, out, ws,
        M, N, K, values.shape[1], indices.shape[1],
        values.stride(0), indices.stride(0), B.stride(0), B.stride(1),
        out.stride(0), out.stride(1), n_class(N),
        HAS_BIAS=bias is not None, SPLIT_K=S,
        IDX64=needs_int64(values, indices, B, out, sizes=(M, N, K)))
    if S > 1:
        reduce_split_k(ws, bias, out)


# sparsekern::_triton_semi24: schema in sparsekern/_ops.py (as every op of the namespace); the
# kernel above serves CUDA tensors (and CPU ones under the Triton interpreter).
register_kernel("sparsekern::_triton_semi24", ("cpu", "cuda"), triton_semi24)
register_fake("sparsekern::_triton_semi24", lambda *args, **kwargs: None)
