"""Bytes model and speedup bound (sparsekern.bench.bounds), checked against real formats."""
import pytest
import torch

import sparsekern as sk
from sparsekern.bench import bounds
from sparsekern.bench.magnitude import prune


def test_2to4_fp32_gemv_bound_is_1_88():
    M = K = 4096
    dense = bounds.dense_bytes(M, K, 1, 4)
    sparse = bounds.sparse_bytes(bounds.semi24_bytes(M, K, 4), M, K, 1, 4)
    assert bounds.semi24_bytes(M, K, 4) == M * K * 2.125
    assert bounds.bytes_bound(dense, sparse) == pytest.approx(4 / 2.125, rel=2e-3)


def test_csc_int16_moves_6_bytes_per_stored_value():
    M, K, nnz = 4096, 4096, 4096 * 4096 // 10
    assert bounds.csc_bytes(M, K, nnz, 4) == 6 * nnz + 4 * (K + 1)
    dense = bounds.dense_bytes(M, K, 1, 4)
    sparse = bounds.sparse_bytes(bounds.csc_bytes(M, K, nnz, 4), M, K, 1, 4)
    assert bounds.bytes_bound(dense, sparse) == pytest.approx(4 / 0.6, rel=1e-2)  # x, y, offsets


def test_csc_rows_widen_to_int32_past_32767():
    assert bounds.csc_bytes(40000, 10, 100, 4) == 100 * 8 + 11 * 4


def test_bsr_bytes_are_values_plus_4_bytes_per_block():
    assert bounds.bsr_bytes(64, 10, (32, 32), 4) == 10 * (32 * 32 * 4 + 4) + 3 * 4


@pytest.mark.parametrize("layout,block", [("2:4", None), ("bsr", (16, 16)), ("bsr", (4, 8)),
                                          ("csc", None)])
@pytest.mark.parametrize("M,K", [(96, 130), (64, 64)])
def test_formulas_match_the_real_formats(layout, block, M, K):
    W = prune(torch.randn(M, K, generator=torch.Generator().manual_seed(1)), layout, 0.7, block)
    A = sk.to_sparse(W, layout=layout, blocksize=block)
    if layout == "2:4":
        want = bounds.semi24_bytes(M, K, 4)
    elif layout == "bsr":
        want = bounds.bsr_bytes(M, A.values.shape[0], block, 4)
    else:
        want = bounds.csc_bytes(M, K, A.nnz, 4)
    assert A.nbytes == want


def test_io_bytes_count_x_and_y_once():
    assert bounds.io_bytes(10, 20, 3, 4) == (20 * 3 + 10 * 3) * 4
    assert bounds.dense_bytes(10, 20, 3, 2) == 10 * 20 * 2 + (20 * 3 + 10 * 3) * 2


def test_sparse_bytes_scale_weight_by_live_columns():
    assert bounds.sparse_bytes(1000, 10, 20, 1, 4, weight_fraction=0.5) == 500 + 30 * 4


def test_bound_rejects_zero_sparse_bytes():
    with pytest.raises(ValueError, match="sparse bytes must be > 0"):
        bounds.bytes_bound(10, 0)


def test_live_column_fraction():
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    assert bounds.live_column_fraction(x) == 0.5
    assert bounds.live_column_fraction(torch.zeros(0, 4)) == 0.0


def test_memory_bound_uses_arithmetic_intensity_against_balance():
    M = K = 4096
    gemv = (bounds.dense_flops(M, K, 1), bounds.dense_bytes(M, K, 1, 4))
    gemm = (bounds.dense_flops(M, K, 512), bounds.dense_bytes(M, K, 512, 4))
    assert bounds.is_memory_bound(*gemv, balance=5.0)
    assert not bounds.is_memory_bound(*gemm, balance=5.0)
    assert not bounds.is_memory_bound(*gemv, balance=None)


def test_flops_and_rates():
    assert bounds.dense_flops(2, 3, 4) == 48
    assert bounds.stored_flops(10, 4) == 80
    assert bounds.rate(2e9, 2.0) == pytest.approx(1.0)
    assert bounds.rate(1.0, None) is None
    assert bounds.rate(1.0, 0.0) is None
