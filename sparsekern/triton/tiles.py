"""Triton helpers shared by the sparse kernels: program order, epilogue, non-finite B.

All are ``@triton.jit`` device functions (torch-free), inlined into the kernels.

Non-finite B. The 2:4 and CSC kernels expand a sparse tile into a dense one whose
unstored positions hold 0 and multiply it with ``tl.dot``. A dense dot would turn
``0 * NaN`` at an unstored position into NaN, but the contract says only *stored* entries
meet B. So the main loop multiplies with B's finite part (:func:`finite_part`: non-finite
entries replaced by 0) and notes whether any non-finite value was seen; only then does a
second, slow pass (one stored entry or column at a time, few registers) add the products
of the stored entries with B's non-finite values. Adding those (each +-Inf or NaN) to the
finite sum gives what IEEE summation of all stored products gives.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def grouped_pid(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Map a linear program id to (pid_m, pid_n), GROUP_M row tiles at a time.

    Consecutive programs walk down GROUP_M row tiles of one column tile before moving on,
    so the B columns they share stay in L2 (the matmul tutorial's grouped order).
    """
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def split_range(lo, hi, pid_s, SPLIT_K: tl.constexpr, UNIT: tl.constexpr):
    """The part [lo', hi') of [lo, hi) that split ``pid_s`` of SPLIT_K handles.

    Boundaries fall on multiples of UNIT from lo (hi - lo must be a multiple of UNIT), so
    alignment that holds for lo holds for every split.
    """
    first = lo
    last = hi
    if SPLIT_K > 1:  # (one return: Triton checks every return's types, even pruned ones)
        units = (hi - lo) // UNIT
        # floor(units * p / SPLIT_K) without forming units * p, which passes 2^31 for ranges
        # of more than 2^31 / SPLIT_K units (BSR block rows) although every offset fits in
        # 32 bits: with units = q * SPLIT_K + r it is q * p + floor(r * p / SPLIT_K), and
        # no term exceeds units.
        q = units // SPLIT_K
        r = units % SPLIT_K
        first = lo + (q * pid_s + (r * pid_s) // SPLIT_K) * UNIT
        last = lo + (q * (pid_s + 1) + (r * (pid_s + 1)) // SPLIT_K) * UNIT
    return first, last


@triton.jit
def cdiv_nowrap(a, b: tl.constexpr):
    """ceil(a / b) for a size a >= 0 without forming a + b - 1 (as ``tl.cdiv`` does), which
    wraps in 32 bits when a is within b of 2^31 (64-bit kernels only meet such sizes)."""
    return a // b + (a % b != 0)


@triton.jit
def store_tile(acc, offs_m, m_ok, offs_n, n_ok, M, N, bias_ptr, out_ptr, stride_om, stride_on,
               ws_ptr, pid_s, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr):
    """Write a [BM, BN] float32 tile: to ``out`` (+ bias, cast) or to the split-K workspace.

    acc: [BM, BN] float32; offs_m [BM] output rows (m_ok: row is real and < M);
    offs_n [BN] output columns (n_ok: < N). out: [M, N] any strides, out's dtype.
    offs_m and offs_n are int64 when the kernel runs with 64-bit offsets (IDX64), so that
    both products with out's strides are formed in int64.
    ws: [SPLIT_K, M, N] float32 contiguous partial sums (only when SPLIT_K > 1).
    """
    mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_m, mask=m_ok, other=0.0)
            acc += bias.to(tl.float32)[:, None]
        ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        base = ws_ptr + pid_s.to(tl.int64) * M * N
        tl.store(base + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask)


@triton.jit
def nonfinite_products(v, b, hit):
    """v * b where ``hit`` (a stored entry meets a NaN/Inf of B), else 0; float32.

    v: [BM, 1] or [BM] broadcastable values, b: [1, BN] row of B, hit: [BM, BN] bool.
    """
    prod = v.to(tl.float32) * b.to(tl.float32)
    return tl.where(hit, prod, tl.zeros_like(prod))


@triton.jit
def finite_part(b):
    """(b with NaN/Inf replaced by 0, 1 if b held any NaN/Inf else 0) for a tile of B."""
    fin = tl.abs(b) < float("inf")  # False for NaN and +-Inf
    bad = tl.max((~fin).to(tl.int32))
    return tl.where(fin, b, tl.zeros_like(b)), bad
