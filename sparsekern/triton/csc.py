"""Unstructured (CSC) times dense on the GPU: ``out = A @ B (+ bias)``.

"Load as sparse, compute as dense". The weight is repacked once into row strips of 16 rows
(csc_strips.py: values, column, row-in-strip per stored entry). One program owns a strip
and an N tile; per step it loads CAP stored entries (values and 3 bytes of index each),
gathers the CAP rows of B they need, and expands the entries into a dense [16, CAP] tile
that holds each value in its row and zeros elsewhere, so that one dense ``tl.dot``

    out[16, BN] += expanded[16, CAP] @ B[cols, n-tile][CAP, BN]

adds exactly the stored products. Triton cannot scatter into shared memory (Flash-LLM's
way to build a dense weight tile), but this expansion needs only a compare and a select
per (row, entry), and it keeps the tensor cores' work at 16 * nnz * N multiply-adds.

Bounds (H100, fp16, 90% unstructured sparsity, decode). DRAM traffic is 5 bytes per
stored value against dense's 20 (2 bytes per weight at 10% density): at most ~4x over
cuBLAS. Two more costs set what is reachable: the expansion (~16 compare/selects per
entry, ~2 us of ALU time for a 4096^2 weight) and the B gather, 2*N bytes per entry from
L1/L2 (at N = 16 that is ~6x the weight's bytes; a strip reuses a B row ~1.6x), so expect
~3x at N = 1..8 and ~2x at N = 16. Taller strips would cut the gather but cost more
selects per entry (measure before changing STRIP_ROWS). For large N the one-hot dot does
16 * 10% = 1.6x dense's FLOPs: dense is faster there (the "auto" layout choice keeps such
layers dense). Split-K over a strip's entries adds programs when M / 16 strips are too
few to keep enough loads in flight. Only stored entries meet B (tiles.py handles NaN/Inf).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import register_fake, register_kernel, wrap_triton

from .configs import (INT32_LIMIT, autotuned, choose_split_k, n_class, needs_int64, regime,
                      sm_count, smallest_tile)
from .csc_strips import ALIGN, STRIP_ROWS
from .splitk import reduce_split_k, splitk_workspace
from .tiles import (cdiv_nowrap, finite_part, grouped_pid, nonfinite_products, split_range,
                    store_tile)


@triton.jit
def csc_spmm_kernel(
    values_ptr,      # [nnz] stored values, strip by strip (csc_strips.RowStrips)
    cols_ptr,        # [nnz] int16/int32 column of each value, in [0, K)
    rows_ptr,        # [nnz] uint8 row of each value inside its strip, in [0, TM)
    strip_ptr,       # [ceil(M/TM) + 1] int32/int64 first entry of each strip
    b_ptr,           # [K, N] dense B, strides (stride_bk, stride_bn)
    bias_ptr,        # [M] bias in out's dtype (dummy pointer when HAS_BIAS is False)
    out_ptr,         # [M, N] output, strides (stride_om, stride_on)
    ws_ptr,          # [SPLIT_K, M, N] float32 partial sums (dummy when SPLIT_K == 1)
    M, N, K,
    stride_bk, stride_bn, stride_om, stride_on,
    n_class,         # N rounded up to a power of two: autotune key only
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    IDX64: tl.constexpr,
    TM: tl.constexpr,                          # rows per strip (the repack's STRIP_ROWS)
    ALIGN: tl.constexpr,                       # strips start on multiples of ALIGN entries
    CAP: tl.constexpr, BN: tl.constexpr,       # entries per step, N tile
    GROUP_M: tl.constexpr,
):
    if IDX64:
        num_pid_m = cdiv_nowrap(M, TM)
        num_pid_n = cdiv_nowrap(N, BN)
    else:
        num_pid_m = tl.cdiv(M, TM)
        num_pid_n = tl.cdiv(N, BN)
    pid_m, pid_n = grouped_pid(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    pid_s = tl.program_id(1)
    if IDX64:
        # 64-bit offsets: widen the tile indices before any index is formed from them, so
        # rows, columns and their products with the strides (B, out) are all int64.
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
    i = tl.arange(0, TM)
    offs_m = pid_m * TM + i
    m_ok = offs_m < M
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < N

    start = tl.load(strip_ptr + pid_m)
    end = tl.load(strip_ptr + pid_m + 1)
    if IDX64:  # int32 strip pointers: entries e0 + CAP - 1 may still pass 2^31
        start = start.to(tl.int64)
        end = end.to(tl.int64)
    # Strips start on multiples of ALIGN entries (the repack pads them): say so, so that
    # the loads of values and indices are vectorized.
    start = tl.multiple_of(start, ALIGN)
    end = tl.multiple_of(end, ALIGN)
    lo, hi = split_range(start, end, pid_s, SPLIT_K, ALIGN)
    lo = tl.multiple_of(lo, ALIGN)
    hi = tl.multiple_of(hi, ALIGN)
    je = tl.arange(0, CAP)

    acc = tl.zeros((TM, BN), dtype=tl.float32)
    any_bad = tl.program_id(0) * 0   # int32 scalar: was a NaN/Inf seen in B?
    for e0 in range(lo, hi, CAP):
        e = e0 + je
        ok = e < hi
        v = tl.load(values_ptr + e, mask=ok, other=0.0)
        c = tl.load(cols_ptr + e, mask=ok, other=0).to(tl.int32)
        r = tl.load(rows_ptr + e, mask=ok, other=TM).to(tl.int32)  # TM: matches no row
        if IDX64:
            c = c.to(tl.int64)
        b = tl.load(b_ptr + c[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                    mask=ok[:, None] & n_ok[None, :], other=0.0)
        b, bad = finite_part(b)
        any_bad = tl.maximum(any_bad, bad)
        a = tl.where(r[None, :] == i[:, None], v[None, :], tl.zeros_like(v)[None, :])
        acc = tl.dot(a, b, acc)

    if any_bad > 0:
        # Rare: B holds NaN/Inf. Walk this split's entries one at a time and add their
        # products with B's non-finite values (few registers, slow).
        extra = tl.zeros((TM, BN), dtype=tl.float32)
        for e in range(lo, hi):
            v = tl.load(values_ptr + e)
            c = tl.load(cols_ptr + e).to(tl.int32)
            r = tl.load(rows_ptr + e).to(tl.int32)
            if IDX64:
                c = c.to(tl.int64)
            b = tl.load(b_ptr + c * stride_bk + offs_n * stride_bn, mask=n_ok, other=0.0)
            hit = (i == r)[:, None] & ~(tl.abs(b) < float("inf"))[None, :]
            extra += nonfinite_products(v, b[None, :], hit)
        acc += extra

    store_tile(acc, offs_m, m_ok, offs_n, n_ok, M, N, bias_ptr, out_ptr, stride_om, stride_on,
               ws_ptr, pid_s, HAS_BIAS, SPLIT_K)


def csc_split_k(M: int, N: int, nnz: int, device) -> int:
    """Split-K for a CSC launch: from the smallest tiles any configuration uses."""
    reg = regime(N)
    BN = smallest_tile("csc", reg, "BN")
    CAP = smallest_tile("csc", reg, "CAP")
    strips = triton.cdiv(M, STRIP_ROWS)
    tiles = strips * triton.cdiv(N, BN)
    return choose_split_k(tiles, nnz // max(1, strips) // CAP, sm_count(device), "csc", reg)


def triton_csc(values: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor,
               strip_ptr: torch.Tensor, M: int, K: int, B: torch.Tensor,
               bias: Optional[torch.Tensor], out: torch.Tensor, split_k: int = 0) -> None:
    """out[M, N] = A @ B (+ bias[:, None]) for A repacked in row strips; writes ``out``.

    Args:
        values, cols, rows, strip_ptr: the csc_strips.RowStrips of A (contiguous).
        B: [K, N] any strides, dtype of values. bias: [M] in out's dtype or None.
        out: [M, N] any strides (written, never read).
        split_k: 0 picks a split from the shapes; s >= 1 forces s (tests use it).
    """
    N = B.shape[1]
    if bias is not None:  # the kernels read bias[m] at bias_ptr + m
        bias = bias.contiguous()
    S = split_k if split_k > 0 else csc_split_k(M, N, values.shape[0], B.device)
    if S * M * N >= INT32_LIMIT:
        S = 1
    ws = splitk_workspace(S, M, N, B.device) if S > 1 else out
    kernel = autotuned(csc_spmm_kernel, "csc", regime(N), ["n_class", "M", "K", "SPLIT_K"])

    def grid(meta):
        return (triton.cdiv(M, STRIP_ROWS) * triton.cdiv(N, meta["BN"]), S)

    wrap_triton(kernel)[grid](
        values, cols, rows, strip_ptr, B, bias if bias is not None else out, out, ws,
        M, N, K, B.stride(0), B.stride(1), out.stride(0), out.stride(1), n_class(N),
        HAS_BIAS=bias is not None, SPLIT_K=S,
        IDX64=needs_int64(values, B, out, sizes=(M, N, values.shape[0])),
        TM=STRIP_ROWS, ALIGN=ALIGN)
    if S > 1:
        reduce_split_k(ws, bias, out)


# sparsekern::_triton_csc: schema in sparsekern/_ops.py (as every op of the namespace); the
# kernel above serves CUDA tensors (and CPU ones under the Triton interpreter).
register_kernel("sparsekern::_triton_csc", ("cpu", "cuda"), triton_csc)
register_fake("sparsekern::_triton_csc", lambda *args, **kwargs: None)
