"""CPU checks of the CUDA backend's repacked layouts (no GPU needed).

The 2:4 copy is decoded by an emulator written straight from the PTX ISA description of
mma.sp.m16n8k32 (.f16/.bf16, sparsity selector 0), element by element and independently of
the vectorized repack: it must give back the dense weight. The CSC slabs are decoded the way
the kernel walks them.
"""
import pytest
import torch

import sparsekern as sk
from sparsekern.backends.cuda_repack import (CSC_SLAB_ROWS, SEMI24_COL_PAD, SEMI24_ROW_PAD,
                                             kernel_reads_b, repack_csc_slabs, repack_semi24,
                                             semi24_b_operand)
from tests.helpers import random_pattern_weight


def mma_sp_sparse_operand(a_frag: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense [Mp, Kp] A that mma.sp.m16n8k32 sees, k-step by k-step (PTX ISA semantics).

    Per 16x32 step: lane l (groupID g = l >> 2, threadID_in_group t = l % 4) holds A registers
    a0..a3: a0 = row g, compressed cols 2t, 2t+1; a1 = row g+8, same cols; a2 = row g, cols
    2t+8, 2t+9; a3 = row g+8, same (low half = lower column). Compressed cols 2q, 2q+1 are the
    two kept values of the group of 4 dense cols 4q..4q+3. With sparsity selector 0, the lanes
    with t = 0 and t = 1 supply metadata: lane 4g + t covers groups 4t..4t+3 (dense cols
    16t..16t+15), row g in bits 0..15 and row g+8 in bits 16..31, 4 bits per group from the
    low end: bits 0-1 the position of the first kept value, bits 2-3 of the second.
    """
    Mt, Kt = a_frag.shape[:2]
    dense = torch.zeros(Mt * 16, Kt * 32, dtype=torch.float64)
    words = meta.to(torch.int64) & 0xFFFFFFFF
    for mt in range(Mt):
        for ks in range(Kt):
            regs = a_frag[mt, ks].double()  # [32 lanes, 8 halves]
            for g in range(8):
                for half in range(2):  # row g (bits 0..15) or row g + 8 (bits 16..31)
                    row = g + 8 * half
                    for t_meta in range(2):  # the lane of the pair supplying the metadata
                        word = int(words[mt, ks, 2 * g + t_meta])
                        for j in range(4):
                            q = 4 * t_meta + j  # group within the step
                            nib = (word >> (16 * half + 4 * j)) & 0xF
                            pos = (nib & 3, nib >> 2)
                            assert pos[0] < pos[1], f"invalid metadata nibble {nib:#06b}"
                            lane = 4 * g + (q % 4)
                            reg = 2 * (q // 4) + half  # a0/a1 for groups 0..3, a2/a3 for 4..7
                            for e in range(2):
                                col = 32 * ks + 4 * q + pos[e]
                                dense[16 * mt + row, col] = regs[lane, 2 * reg + e]
    return dense


@pytest.mark.parametrize("M,K", [(1, 1), (16, 32), (5, 7), (20, 70), (130, 300), (3, 260)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_semi24_repack_is_what_mma_sp_reads(M, K, dtype):
    W = random_pattern_weight(M, K, "2:4", density=0.5, dtype=dtype)
    A = sk.to_sparse(W, layout="2:4")
    r = repack_semi24(A.values, A.indices, M, K)
    Mp, Kp = r.a_frag.shape[0] * 16, r.a_frag.shape[1] * 32
    assert Mp % SEMI24_ROW_PAD == 0 and Kp % SEMI24_COL_PAD == 0 and Mp >= M and Kp >= K
    assert r.a_frag.dtype == dtype and r.a_frag.shape[2:] == (32, 8)
    assert r.meta.dtype == torch.int32 and r.meta.shape == (Mp // 16, Kp // 32, 16)
    dense = mma_sp_sparse_operand(r.a_frag, r.meta)
    expect = torch.zeros(Mp, Kp, dtype=torch.float64)
    expect[:M, :K] = W.double()
    assert torch.equal(dense, expect)


def test_semi24_repack_sparse_rows_and_all_zero_groups():
    # Rows with fewer than two nonzeros per group, and an all-zero weight (density 0).
    W = torch.zeros(33, 64, dtype=torch.float16)
    W[0, 1] = 1.5
    W[7, 62] = -2.0
    W[32, 0:2] = torch.tensor([3.0, 4.0])
    for weight in (W, torch.zeros_like(W)):
        A = sk.to_sparse(weight, layout="2:4")
        r = repack_semi24(A.values, A.indices, 33, 64)
        dense = mma_sp_sparse_operand(r.a_frag, r.meta)
        assert torch.equal(dense[:33, :64], weight.double())
        assert not dense[33:].any() and not dense[:, 64:].any()


def test_semi24_repack_zeroes_values_stored_past_k():
    # K = 5: the second group covers columns 4..7 and its second kept slot is column 5 (>= K),
    # padding that is never part of the product, even when a hand-made tensor puts NaN there.
    W = torch.zeros(2, 5, dtype=torch.float16)
    W[:, 4] = 1.0
    A = sk.to_sparse(W, layout="2:4")
    values = A.values.clone()
    values[:, 3] = float("nan")
    r = repack_semi24(values, A.indices, 2, 5)
    dense = mma_sp_sparse_operand(r.a_frag, r.meta)
    assert not torch.isnan(dense).any()
    assert torch.equal(dense[:2, :5], W.double())


def test_semi24_repack_rejects_unordered_positions():
    A = sk.to_sparse(random_pattern_weight(4, 8, "2:4", dtype=torch.float16), layout="2:4")
    bad = A.indices.clone()
    bad[2, 0] = (bad[2, 0] & 0x0F) | (0b0111 << 4)  # group 1 of row 2: positions (3, 1)
    with pytest.raises(ValueError, match=r"2:4 indices row 2, group 1: positions \(3, 1\)"):
        repack_semi24(A.values, bad, 4, 8)


def decode_csc_slabs(values, rows, ptr, M, K):
    """Dense [M, K] from the slab layout, walking it as the kernel does."""
    dense = torch.zeros(M, K, dtype=torch.float64)
    for s in range(ptr.shape[0]):
        for k in range(K):
            lo, hi = int(ptr[s, k]), int(ptr[s, k + 1])
            assert 0 <= lo <= hi <= values.numel()
            local = rows[lo:hi].long()
            assert bool((local >= 0).all()) and bool((local < CSC_SLAB_ROWS).all())
            assert bool((local[1:] > local[:-1]).all()), "rows must be distinct in a column"
            dense[s * CSC_SLAB_ROWS + local, k] += values[lo:hi].double()
    return dense


@pytest.mark.parametrize("M,K,density", [(1, 1, 1.0), (7, 5, 0.5), (513, 9, 0.3),
                                         (1100, 40, 0.1), (600, 3, 0.0), (64, 64, 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_csc_slabs_decode_to_the_weight(M, K, density, dtype):
    W = random_pattern_weight(M, K, "csc", density=density, dtype=dtype)
    A = sk.to_sparse(W, layout="csc")
    r = repack_csc_slabs(A.values, A.indices, A.offsets, M, K)
    assert r.ptr.shape == (-(-M // CSC_SLAB_ROWS), K + 1) and r.ptr.dtype == torch.int32
    assert r.rows.dtype == torch.int16 and r.values.dtype == dtype
    assert torch.equal(decode_csc_slabs(r.values, r.rows, r.ptr, M, K), W.double())
    # Slabs follow one another: each starts where the previous ended.
    assert torch.equal(r.ptr[1:, 0], r.ptr[:-1, -1])


def test_csc_slabs_sum_repeated_entries():
    # Hand-made CSC with row 3 stored twice in column 1 (the reference sums both).
    values = torch.tensor([1.0, 2.0, 0.5, 4.0])
    rows = torch.tensor([0, 3, 3, 600], dtype=torch.int16)
    offsets = torch.tensor([0, 1, 4], dtype=torch.int32)
    r = repack_csc_slabs(values, rows, offsets, 700, 2)
    dense = decode_csc_slabs(r.values, r.rows, r.ptr, 700, 2)
    assert dense[3, 1] == 2.5 and dense[0, 0] == 1.0 and dense[600, 1] == 4.0
    assert r.values.numel() == 3


def test_csc_slabs_reject_out_of_range_rows_and_bad_offsets():
    values = torch.ones(3)
    with pytest.raises(ValueError, match=r"csc row indices\[2\]=9 is out of range"):
        repack_csc_slabs(values, torch.tensor([0, 1, 9], dtype=torch.int16),
                         torch.tensor([0, 2, 3], dtype=torch.int32), 9, 2)
    with pytest.raises(ValueError, match=r"csc offsets must not decrease"):
        repack_csc_slabs(values, torch.tensor([0, 1, 2], dtype=torch.int16),
                         torch.tensor([0, 3, 2, 3], dtype=torch.int32), 9, 3)


def test_b_operand_in_place_or_aligned_copy():
    x = torch.randn(5, 64, dtype=torch.float16)  # activations [N, K]
    assert kernel_reads_b(x.t())  # K contiguous, row stride 64
    assert kernel_reads_b(torch.randn(64, 24, dtype=torch.float16))  # N contiguous, 24 % 8 == 0
    assert kernel_reads_b(torch.randn(64, 1, dtype=torch.float16))  # GEMV vector
    for B in (torch.randn(7, 3, dtype=torch.float16),           # N contiguous, stride 3
              torch.randn(3, 7, dtype=torch.float16).t(),       # K contiguous, stride 7
              torch.randn(40, 70, dtype=torch.float16)[:, ::2],  # no contiguous dimension
              torch.randn(40, 35, dtype=torch.float16)[:, 1:]):  # misaligned start
        assert not kernel_reads_b(B)
        C = semi24_b_operand(B)
        assert kernel_reads_b(C) and torch.equal(C, B)


def _emulated_run(swap_row_halves: bool = False):
    """run(A, B) for the layout probe: the mma.sp operand emulator times B (float64, CPU);
    ``swap_row_halves`` plants a layout bug (registers of rows g and g + 8 exchanged)."""
    last = {}

    def run(A, B):
        M, K = A.shape
        if last.get("A") is not A:  # the probe runs each weight with several B
            r = repack_semi24(A.values, A.indices, M, K)
            a_frag = r.a_frag.clone()
            if swap_row_halves:
                a_frag = a_frag.view(*a_frag.shape[:3], 4, 2)[..., [1, 0, 3, 2], :].reshape(
                    r.a_frag.shape)
            last.update(A=A, dense=mma_sp_sparse_operand(a_frag, r.meta)[:M, :K])
        return (last["dense"] @ B.double()).to(B.dtype)
    return run


PROBE = dict(M=32, K=64, rows=(0, 8, 13), cols=(0, 3, 17, 32), device="cpu")


def test_layout_probe_finds_nothing_on_the_emulated_kernel():
    from sparsekern.bench.cuda_selftime import probe_semi24_layout
    res = probe_semi24_layout(_emulated_run(), N=8, **PROBE)
    assert res["checked"] == 3 * 4 * 4 and res["mismatches"] == []


def test_layout_probe_names_a_swapped_half():
    from sparsekern.bench.cuda_selftime import probe_semi24_layout
    res = probe_semi24_layout(_emulated_run(swap_row_halves=True), N=40, kinds=("row",), **PROBE)
    assert res["mismatches"], "the planted swap of rows g and g+8 went unnoticed"
    assert any("out row offset +8" in m or "out row offset -8" in m for m in res["mismatches"])
    assert all(m.startswith("A(") for m in res["mismatches"])
