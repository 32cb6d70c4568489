"""Packing from dense and unpacking (bit for bit) for every layout and dtype."""
import io

import pytest
import torch

import sparsekern as sk
from sparsekern.formats import BSR, CSC, Semi24, from_parts, layouts
from tests.helpers import random_pattern_weight

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SHAPES = [(1, 1), (3, 5), (8, 16), (17, 33), (64, 7), (5, 130)]
LAYOUTS = layouts.names()  # every registered layout


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns (so NaN and -0.0 compare exactly)."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def same_matrix(D: torch.Tensor, W: torch.Tensor) -> bool:
    """Every nonzero (NaN included) bit for bit; every zero a zero (-0.0 may come back +0.0)."""
    nz = W != 0
    return (D.shape == W.shape and D.dtype == W.dtype and
            torch.equal(bits(D)[nz], bits(W)[nz]) and bool((D[~nz] == 0).all()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K", SHAPES)
@pytest.mark.parametrize("layout,blocksize",
                         [(n, None) for n in LAYOUTS if not layouts.get(n).blocked] +
                         [("bsr", b) for b in ((4, 4), (1, 8), (8, 1), (3, 5))])
def test_roundtrip_bit_for_bit(layout, blocksize, M, K, dtype):
    W = random_pattern_weight(M, K, layout, density=0.4, blocksize=blocksize or (4, 4), dtype=dtype)
    A = sk.to_sparse(W, layout=layout, blocksize=blocksize)
    D = A.to_dense()
    assert D.shape == W.shape and D.dtype == W.dtype
    assert same_matrix(D, W)
    assert A.shape == (M, K) and A.layout == layout and A.dtype == dtype
    assert A.device == W.device


@pytest.mark.parametrize("layout", LAYOUTS)
def test_roundtrip_keeps_nan_and_negative_values(layout):
    W = torch.zeros(4, 8)
    W[0, 1] = float("nan")
    W[1, 2] = float("-inf")
    W[2, 5] = -3.5
    A = sk.to_sparse(W, layout=layout, blocksize=(2, 2) if layout == "bsr" else None)
    assert same_matrix(A.to_dense(), W)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_density_zero_and_one(layout):
    Z = torch.zeros(6, 12)
    A = sk.to_sparse(Z, layout=layout, blocksize=(2, 4) if layout == "bsr" else None)
    assert torch.equal(A.to_dense(), Z)
    if layout == "bsr":
        assert A.nnz == 0
    if layouts.get(layout).fixed_density is None:  # 2:4 / 1:4 cannot be fully dense
        F = torch.randn(6, 12)
        F[F == 0] = 1.0
        A = sk.to_sparse(F, layout=layout, blocksize=(2, 4) if layout == "bsr" else None)
        assert torch.equal(A.to_dense(), F)
        assert A.nnz == 72


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_matrix(layout):
    for M, K in [(0, 8), (5, 0), (0, 0)]:
        W = torch.zeros(M, K)
        A = sk.to_sparse(W, layout=layout, blocksize=(2, 2) if layout == "bsr" else None)
        assert A.to_dense().shape == (M, K)


def test_nbytes_counts_all_three_tensors():
    W = random_pattern_weight(32, 64, "2:4")
    A = sk.to_sparse(W, layout="2:4")
    assert A.nbytes == 32 * 32 * 4 + 32 * 8 * 1 + 0
    C = sk.to_sparse(random_pattern_weight(100, 50, "csc", density=0.1), layout="csc")
    assert C.indices.dtype == torch.int16 and C.offsets.dtype == torch.int32
    assert C.nbytes == C.nnz * 4 + C.nnz * 2 + 51 * 4
    B = sk.to_sparse(random_pattern_weight(64, 64, "bsr", blocksize=(16, 16)), "bsr",
                     blocksize=(16, 16))
    nnzb = B.values.shape[0]
    assert B.nbytes == nnzb * 256 * 4 + nnzb * 4 + 5 * 4


def test_csc_uses_int32_rows_past_int16():
    W = torch.zeros(40000, 3)
    W[39999, 1] = 1.0
    A = sk.to_sparse(W, layout="csc")
    assert A.indices.dtype == torch.int32
    assert torch.equal(A.to_dense(), W)


def test_semi24_layout_of_metadata():
    W = torch.tensor([[0., 1., 0., 2., 3., 0., 0., 4.]])
    A = sk.to_sparse(W, layout="2:4")
    assert A.values.tolist() == [[1., 2., 3., 4.]]
    # group 0 keeps positions (1, 3) -> 1 | 3 << 2 = 13; group 1 keeps (0, 3) -> 12
    assert A.indices.tolist() == [[13 | (12 << 4)]]


def test_semi24_group_with_fewer_nonzeros_keeps_free_positions():
    W = torch.tensor([[0., 0., 5., 0., 0., 0., 0., 0., 7.]])  # K=9: last group padded
    A = sk.to_sparse(W, layout="2:4")
    assert A.values.shape == (1, 6)
    assert torch.equal(A.to_dense(), W)


def test_bsr_blocks_and_order():
    W = torch.zeros(4, 6)
    W[0, 4] = 1.0  # block (0, 2)
    W[3, 0] = 2.0  # block (1, 0)
    W[2, 3] = 3.0  # block (1, 1)
    A = sk.to_sparse(W, layout="bsr", blocksize=(2, 2))
    assert A.indices.tolist() == [2, 0, 1]
    assert A.offsets.tolist() == [0, 1, 3]
    assert A.blocksize == (2, 2)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_repeated_indices_add_up_in_to_dense_as_in_spmm(backend, dtype):
    # The op accepts a row stored twice in a CSC column, or a block column twice in a BSR
    # block row, and every kernel adds them; to_dense must give the same matrix.
    if backend == "cpu" and sk._extension._C is None:
        pytest.skip("sparsekern._C is not built")
    g = torch.Generator().manual_seed(0)
    csc = CSC(torch.randn(6, generator=g).to(dtype), torch.tensor([0, 0, 2, 1, 3, 1],
              dtype=torch.int16), torch.tensor([0, 2, 3, 6], dtype=torch.int32), (4, 3))
    bsr = BSR(torch.randn(3, 2, 2, generator=g).to(dtype), torch.tensor([1, 0, 1],
              dtype=torch.int32), torch.tensor([0, 3, 3], dtype=torch.int32), (4, 4))
    D, v = csc.to_dense(), csc.values  # sums in the values' dtype
    assert D[0, 0] == v[0] + v[1] and D[1, 2] == v[3] + v[5] and D[2, 1] == v[2]
    assert torch.equal(bsr.to_dense()[:2, 2:], bsr.values[0] + bsr.values[2])
    for A in (csc, bsr):
        B = torch.randn(A.shape[1], 5, generator=g)
        with sk.use_backend(backend):
            got = sk.spmm(A, B.to(dtype) if backend == "reference" else B)
        torch.testing.assert_close(got.double(), A.to_dense().double() @ B.double(),
                                   rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-2)


def test_to_dense_keeps_unique_entries_bit_for_bit_when_unsorted():
    A = CSC(torch.tensor([-0.0, float("nan"), 2.0]), torch.tensor([1, 0, 2], dtype=torch.int16),
            torch.tensor([0, 3, 3], dtype=torch.int32), (3, 2))
    D = A.to_dense()
    assert torch.signbit(D[1, 0]) and bool(D[0, 0].isnan()) and D[2, 0] == 2.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_to_device_and_dtype(layout):
    W = random_pattern_weight(8, 12, layout, blocksize=(4, 4))
    A = sk.to_sparse(W, layout=layout, blocksize=(4, 4) if layout == "bsr" else None)
    A2 = A.to("cpu")
    assert torch.equal(A2.to_dense(), W)
    A3 = A.to(torch.float64)
    assert A3.dtype == torch.float64 and A3.indices.dtype == A.indices.dtype
    assert torch.equal(A3.to_dense(), W.double())
    M = A.to("meta")
    assert M.device.type == "meta" and M.indices.device.type == "meta"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_survives_torch_save_weights_only(layout):
    W = random_pattern_weight(9, 13, layout, blocksize=(4, 4))
    A = sk.to_sparse(W, layout=layout, blocksize=(4, 4) if layout == "bsr" else None)
    buf = io.BytesIO()
    torch.save({"values": A.values, "indices": A.indices, "offsets": A.offsets,
                "meta": A.meta()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    B = from_parts(state["meta"]["layout"], state["values"], state["indices"], state["offsets"],
                   state["meta"]["shape"])
    assert torch.equal(B.to_dense(), W)


def test_format_classes_are_exported():
    assert sk.Semi24 is Semi24 and sk.BSR is BSR and sk.CSC is CSC


@pytest.mark.parametrize("K", [1, 4, 7, 8, 12, 13, 36, 100])
def test_semi24_columns_every_metadata_byte(K):
    # Every byte value (valid or not) in every byte position: the column of each stored
    # entry is 4 * group + its nibble's position, group 2j in the low nibble of byte j.
    from sparsekern.formats.semi24 import semi24_columns
    from sparsekern.formats.validate import semi24_meta_cols, semi24_padded_k
    J, G = semi24_meta_cols(K), semi24_padded_k(K) // 4
    ind = torch.arange(256, dtype=torch.int64).remainder(256).to(torch.uint8)
    ind = ind.repeat(J, 1).t().contiguous()  # [256, J]: row r holds byte r everywhere
    cols = semi24_columns(ind, K)
    assert cols.shape == (256, 2 * G) and cols.dtype == torch.int64 and cols.is_contiguous()
    for r in range(256):
        for g in range(G):
            nib = (r >> (4 * (g % 2))) & 15
            assert cols[r, 2 * g].item() == 4 * g + (nib & 3)
            assert cols[r, 2 * g + 1].item() == 4 * g + (nib >> 2)
