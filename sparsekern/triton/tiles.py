"""Triton helpers shared by the sparse kernels: program order, epilogue, non-finite B.

All are ``@triton.jit`` device functions (torch-free), inlined into the kernels.

Non-finite B. The 2:4 and CSC kernels expand a sparse tile into a dense one whose
unstored positions hold 0 and multiply it with ``tl.dot``. A dense dot would turn
``0 * NaN`` at an unstored position into NaN, but the contract says only *stored* entries
meet B. So the main loop multiplies with B's finite part (non-finite entries replaced by 0)
and notes whether any non-finite value was seen; only then a second pass (rare, slow)
counts per output element how many stored entries meet NaN, +Inf and -Inf (exact 0/1
``tl.dot``s) and adds the IEEE result (NaN, +Inf or -Inf) to the accumulator.
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
def split_range(lo, hi, pid_s, SPLIT_K: tl.constexpr):
    """The part [lo', hi') of [lo, hi) that split ``pid_s`` of SPLIT_K handles."""
    if SPLIT_K == 1:
        return lo, hi
    count = hi - lo
    return lo + (count * pid_s) // SPLIT_K, lo + (count * (pid_s + 1)) // SPLIT_K


@triton.jit
def store_tile(acc, offs_m, m_ok, offs_n, n_ok, M, N, bias_ptr, out_ptr, stride_om, stride_on,
               ws_ptr, pid_s, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr):
    """Write a [BM, BN] float32 tile: to ``out`` (+ bias, cast) or to the split-K workspace.

    acc: [BM, BN] float32; offs_m [BM] output rows (m_ok: row is real and < M);
    offs_n [BN] output columns (n_ok: < N). out: [M, N] any strides, out's dtype.
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
def finite_part(b):
    """(b with NaN/Inf replaced by 0, 1 if b held any NaN/Inf else 0) for a tile of B."""
    fin = tl.abs(b) < float("inf")  # False for NaN and +-Inf
    bad = tl.max((~fin).to(tl.int32))
    return tl.where(fin, b, tl.zeros_like(b)), bad


@triton.jit
def count_nonfinite_hits(stored, a, b, cnt_nan, cnt_pinf, cnt_ninf):
    """Add, per output element, the stored entries that meet NaN, +Inf or -Inf in B.

    stored: [BM, BK] bool, which positions of the dense tile are stored entries.
    a: [BM, BK] the dense tile's values; b: [BK, BN] the raw tile of B (masked loads 0).
    cnt_*: [BM, BN] float32 counts. A stored value v meets x = +-Inf as sign(v)*x, or NaN
    when v == 0; it meets NaN as NaN. A NaN v already yields NaN in the main product.
    The 0/1 operands make these dots exact.
    """
    dt = b.dtype
    s = stored.to(dt)
    pos = (stored & (a > 0)).to(dt)
    neg = (stored & (a < 0)).to(dt)
    zer = (stored & (a == 0)).to(dt)
    is_nan = (b != b).to(dt)
    is_pinf = (b == float("inf")).to(dt)
    is_ninf = (b == float("-inf")).to(dt)
    cnt_nan = tl.dot(s, is_nan, cnt_nan)
    cnt_nan = tl.dot(zer, is_pinf + is_ninf, cnt_nan)
    cnt_pinf = tl.dot(pos, is_pinf, cnt_pinf)
    cnt_pinf = tl.dot(neg, is_ninf, cnt_pinf)
    cnt_ninf = tl.dot(pos, is_ninf, cnt_ninf)
    cnt_ninf = tl.dot(neg, is_pinf, cnt_ninf)
    return cnt_nan, cnt_pinf, cnt_ninf


@triton.jit
def nonfinite_term(cnt_nan, cnt_pinf, cnt_ninf):
    """The value (0, +Inf, -Inf or NaN) that the non-finite hits add to a finite sum."""
    zero = tl.zeros_like(cnt_nan)
    inf = zero + float("inf")
    term = tl.where(cnt_pinf > 0, inf, zero)
    term = tl.where(cnt_ninf > 0, -inf, term)
    is_nan = (cnt_nan > 0) | ((cnt_pinf > 0) & (cnt_ninf > 0))
    return tl.where(is_nan, zero + float("nan"), term)
