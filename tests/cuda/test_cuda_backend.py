"""The cuda backend (csrc/cuda) against the float64 dense product / reference backend (GPU).

Every test here carries @pytest.mark.gpu (skipped without CUDA). On a CUDA machine the
extension must have been built with the CUDA kernels: the tests fail, not skip, otherwise.
"""
import pytest
import torch

import sparsekern as sk
from sparsekern.backends import cuda as cuda_backend
from sparsekern.backends import select, use_backend
from tests.helpers import TOL, dense_ref, random_pattern_weight, rel_err

pytestmark = pytest.mark.gpu
DEV = "cuda"


@pytest.fixture(autouse=True)
def kernel_status_checked(monkeypatch):
    """Read the kernels' bad-index flag after each launch (costs a sync; tests only)."""
    monkeypatch.setenv("SPARSEKERN_CUDA_CHECK_STATUS", "1")
    ok, why = cuda_backend.available()
    assert ok, f"the cuda backend must be available on a CUDA machine: {why}"


def make_b(K: int, N: int, kind: str, dtype) -> torch.Tensor:
    """B [K, N] with the strides the op meets: row-major, x.T, strided, misaligned start."""
    if kind == "row":
        return torch.randn(K, N, device=DEV).to(dtype)
    if kind == "xT":  # activations x [N, K]: what sk.linear passes
        return torch.randn(N, K, device=DEV).to(dtype).t()
    if kind == "strided":
        return torch.randn(K, 2 * N, device=DEV).to(dtype)[:, ::2]
    if kind == "misaligned":
        return torch.randn(K * N + 1, device=DEV).to(dtype)[1:].view(K, N)
    raise ValueError(kind)


def run_cuda(A, B, bias=None):
    with use_backend("cuda"):
        return sk.spmm(A, B) if bias is None else torch.ops.sparsekern.spmm(
            *A.op_args(), B, bias)


SEMI24_SHAPES = [(1, 1, 1), (16, 32, 8), (77, 203, 33), (300, 5, 1), (129, 257, 17),
                 (1024, 2048, 512), (4096, 4096, 1), (4096, 4096, 16), (11008, 4096, 8),
                 (512, 1024, 300)]


@pytest.mark.parametrize("M,K,N", SEMI24_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b_kind", ["row", "xT"])
def test_semi24_matches_dense(M, K, N, dtype, b_kind, poison_output):
    W = random_pattern_weight(M, K, "2:4", density=0.5).to(DEV, dtype)
    A = sk.to_sparse(W, layout="2:4")
    B = make_b(K, N, b_kind, dtype)
    bias = torch.randn(M, device=DEV).to(dtype)
    out = run_cuda(A, B, bias)
    assert out.shape == (M, N) and out.dtype == dtype
    assert rel_err(out, dense_ref(W, B, bias)) < TOL[dtype]


@pytest.mark.parametrize("tile", ["small", "mid32", "mid64", "large"])
@pytest.mark.parametrize("M,K,N", [(77, 203, 1), (300, 300, 40), (129, 520, 200)])
@pytest.mark.parametrize("out_kind", ["linear", "rowmajor"])
def test_semi24_every_tile_config_any_n(tile, M, K, N, out_kind, monkeypatch, poison_output):
    """Each tile configuration (forced) is right at any N, column- and row-major out."""
    monkeypatch.setenv("SPARSEKERN_SEMI24_TILE", tile)
    W = random_pattern_weight(M, K, "2:4", density=0.5).to(DEV, torch.float16)
    A = sk.to_sparse(W, layout="2:4")
    bias = torch.randn(M, device=DEV).to(torch.float16)
    x = torch.randn(N, K, device=DEV, dtype=torch.float16)
    with use_backend("cuda"):
        if out_kind == "linear":
            y = sk.linear(x, A, bias=bias).t()
        else:
            y = torch.ops.sparsekern.spmm(*A.op_args(), x.t().contiguous(), bias)
    assert rel_err(y, dense_ref(W, x.t(), bias)) < 1e-2


@pytest.mark.parametrize("M,N", [(4096, 40), (4096, 128), (16896, 64), (8448, 64)])
def test_semi24_mid_n_shapes_that_pick_each_tile(M, N, poison_output):
    """N = 17..256 over M that make the automatic choice land on each tile (132-SM card)."""
    K = 512
    W = random_pattern_weight(M, K, "2:4", density=0.5).to(DEV, torch.bfloat16)
    A = sk.to_sparse(W, layout="2:4")
    x = torch.randn(N, K, device=DEV, dtype=torch.bfloat16)
    with use_backend("cuda"):
        y = sk.linear(x, A)
    assert rel_err(y.t(), dense_ref(W, x.t())) < 1e-2


@pytest.mark.parametrize("b_kind", ["strided", "misaligned"])
@pytest.mark.parametrize("N", [1, 5, 24])
def test_semi24_any_b_strides(b_kind, N, poison_output):
    M, K = 200, 130
    W = random_pattern_weight(M, K, "2:4", density=0.5).to(DEV, torch.float16)
    A = sk.to_sparse(W, layout="2:4")
    B = make_b(K, N, b_kind, torch.float16)
    assert rel_err(run_cuda(A, B), dense_ref(W, B)) < 1e-2


@pytest.mark.parametrize("density", [0.0, 0.25, 1.0])
def test_semi24_density_0_sparse_and_full(density, poison_output):
    # density 1.0 = every group keeps two values; 0.25 leaves stored zeros in many groups.
    M, K, N = 96, 160, 40
    W = random_pattern_weight(M, K, "2:4", density=density).to(DEV, torch.float16)
    if density == 0.0:
        W.zero_()
    A = sk.to_sparse(W, layout="2:4")
    B = make_b(K, N, "xT", torch.float16)
    out = run_cuda(A, B)
    if density == 0.0:
        assert torch.equal(out, torch.zeros_like(out))
    else:
        assert rel_err(out, dense_ref(W, B)) < 1e-2


def test_semi24_nan_in_b_propagates_through_stored_zeros():
    W = torch.zeros(32, 64, device=DEV, dtype=torch.float16)
    W[3, 0] = 1.0  # group 0 of row 3 stores (1.0 at col 0, a stored zero at col 1)
    A = sk.to_sparse(W, layout="2:4")
    B = torch.randn(64, 9, device=DEV, dtype=torch.float16)
    B[1, 4] = float("nan")  # meets the stored zero of row 3 (and of every all-zero group)
    B[2, 5] = float("inf")  # column 2 is not stored in rows with 1.0 at col 0 only
    out = run_cuda(A, B)
    with use_backend("reference"):
        ref = sk.spmm(A, B)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    finite = ~torch.isnan(ref)
    assert torch.allclose(out[finite].float(), ref[finite].float(), rtol=1e-2, atol=1e-2)


def test_semi24_linear_with_bias_and_column_major_output(poison_output):
    M, K, N = 4096, 1024, 64
    W = random_pattern_weight(M, K, "2:4", density=0.5).to(DEV, torch.bfloat16)
    A = sk.to_sparse(W, layout="2:4")
    x = torch.randn(N, K, device=DEV, dtype=torch.bfloat16)
    bias = torch.randn(M, device=DEV, dtype=torch.bfloat16)
    with use_backend("cuda"):
        y = sk.linear(x, A, bias=bias)
    assert y.shape == (N, M)
    assert rel_err(y, (x.double() @ W.double().t()) + bias.double()) < 1e-2


def test_semi24_repack_built_once_per_weight(monkeypatch):
    from sparsekern.backends import cuda_repack
    calls = []
    real = cuda_repack.repack_semi24
    monkeypatch.setattr(cuda_backend, "repack_semi24",
                        lambda *a: calls.append(1) or real(*a))
    W = random_pattern_weight(64, 64, "2:4", density=0.5).to(DEV, torch.float16)
    A = sk.to_sparse(W, layout="2:4")
    for _ in range(3):
        run_cuda(A, make_b(64, 8, "row", torch.float16))
    assert len(calls) == 1


def test_semi24_hand_made_bad_positions_raise():
    A = sk.to_sparse(random_pattern_weight(8, 16, "2:4", density=0.5).to(DEV, torch.float16),
                     layout="2:4")
    bad = A.indices.clone()
    bad[5, 0] = 0b0000_0101  # group 0 of row 5: positions (1, 1)
    with use_backend("cuda"), pytest.raises(ValueError, match=r"row 5, group 0: positions"):
        torch.ops.sparsekern.spmm(A.values, bad, A.offsets, 8, 16, "2:4",
                                  make_b(16, 4, "row", torch.float16))


CSC_DTYPES = [(torch.float32, torch.float32), (torch.float16, torch.float16),
              (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32)]


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 5, 3), (513, 300, 1), (4096, 4096, 1),
                                   (11008, 4096, 8), (1000, 2000, 16), (600, 129, 40)])
@pytest.mark.parametrize("vdt,bdt", CSC_DTYPES)
def test_csc_matches_dense(M, K, N, vdt, bdt, poison_output):
    W = random_pattern_weight(M, K, "csc", density=0.1).to(DEV, vdt)
    A = sk.to_sparse(W, layout="csc")
    B = make_b(K, N, "xT", bdt)
    bias = torch.randn(M, device=DEV).to(bdt)
    out = run_cuda(A, B, bias)
    assert out.dtype == bdt
    assert rel_err(out, dense_ref(W, B, bias)) < TOL[vdt if vdt != torch.float32 else bdt]


@pytest.mark.parametrize("b_kind", ["row", "strided", "misaligned"])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_csc_densities_and_b_strides(b_kind, density, poison_output):
    M, K, N = 700, 90, 5
    W = random_pattern_weight(M, K, "csc", density=density).to(DEV)
    A = sk.to_sparse(W, layout="csc")
    B = make_b(K, N, b_kind, torch.float32)
    out = run_cuda(A, B)
    if density == 0.0:
        assert torch.equal(out, torch.zeros_like(out))
    else:
        assert rel_err(out, dense_ref(W, B)) < 1e-5


def test_csc_zero_activations_are_skipped_but_nan_propagates(poison_output):
    M, K = 2048, 1024
    W = random_pattern_weight(M, K, "csc", density=0.1).to(DEV, torch.float16)
    A = sk.to_sparse(W, layout="csc")
    x = torch.randn(1, K, device=DEV, dtype=torch.float16)
    x[:, torch.rand(K, device=DEV) < 0.5] = 0  # EIE: these columns are never read
    out = run_cuda(A, x.t())
    assert rel_err(out, dense_ref(W, x.t())) < 1e-2
    col = int(W[0].nonzero()[0])
    x[0, col] = float("nan")
    out = run_cuda(A, x.t())
    with use_backend("reference"):
        ref = sk.spmm(A, x.t())
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and bool(torch.isnan(out).any())


def test_csc_k_zero_gives_bias():
    A = sk.to_sparse(torch.zeros(6, 0, device=DEV), layout="csc")
    bias = torch.randn(6, device=DEV)
    out = run_cuda(A, torch.empty(0, 3, device=DEV), bias)
    assert torch.equal(out, bias[:, None].expand(6, 3))


def test_csc_hand_made_out_of_range_row_raises():
    values = torch.ones(3, device=DEV)
    rows = torch.tensor([0, 1, 9], dtype=torch.int16, device=DEV)
    offsets = torch.tensor([0, 2, 3], dtype=torch.int32, device=DEV)
    with use_backend("cuda"), pytest.raises(ValueError, match=r"csc row indices\[2\]=9"):
        torch.ops.sparsekern.spmm(values, rows, offsets, 9, 2, "csc", torch.ones(2, 1, device=DEV))


def test_csc_kernel_reports_bad_repacked_index():
    # The raw op on a corrupt repacked copy: the kernel skips the entry and reports it.
    values = torch.ones(2, device=DEV)
    rows = torch.tensor([0, 600], dtype=torch.int16, device=DEV)  # 600 >= the 5 rows of the only slab
    ptr = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=DEV)
    out = torch.empty(5, 1, device=DEV)
    with pytest.raises(RuntimeError, match=r"out of range"):
        torch.ops.sparsekern._spmm_cuda(values, rows, ptr, 5, 2, "csc",
                                        torch.ones(2, 1, device=DEV), None, out)
    ptr_bad = torch.tensor([[0, 7, 2]], dtype=torch.int32, device=DEV)  # 7 > nnz
    with pytest.raises(RuntimeError, match=r"out of range"):
        torch.ops.sparsekern._spmm_cuda(values, torch.zeros(2, dtype=torch.int16, device=DEV),
                                        ptr_bad, 5, 2, "csc", torch.ones(2, 1, device=DEV),
                                        None, out)


# Grids past the launch limits (gridDim.y/z <= 65535) run as several launches (size audit,
# csrc/cuda/NOTES.md): before, these sizes were refused with an error blaming B.
def test_csc_more_columns_than_one_grid_holds():
    M, K, N = 5, 3, 524281  # ceil(N / NC) > 65535 column chunks
    W = random_pattern_weight(M, K, "csc", density=0.6).to(DEV)
    A = sk.to_sparse(W, layout="csc")
    B = torch.randn(K, N, device=DEV)
    out = run_cuda(A, B)
    assert rel_err(out, dense_ref(W, B, None)) < TOL[torch.float32]


@pytest.mark.parametrize("tile", [None, "small"])
def test_semi24_more_row_blocks_than_one_grid_holds(tile, monkeypatch):
    if tile is not None:
        monkeypatch.setenv("SPARSEKERN_SEMI24_TILE", tile)
    M, K, N = 2097025, 32, 1  # 65536 blocks of 32 rows after padding
    W = random_pattern_weight(M, K, "2:4").to(DEV, torch.float16)
    A = sk.to_sparse(W, layout="2:4")
    B = torch.randn(K, N, device=DEV).half()
    out = run_cuda(A, B)
    assert rel_err(out, dense_ref(W, B, None)) < TOL[torch.float16]


def test_private_op_rejects_bad_shapes_with_their_sizes():
    out = torch.empty(4, 2, device=DEV, dtype=torch.float16)
    B = torch.randn(8, 2, device=DEV, dtype=torch.float16)
    with pytest.raises(RuntimeError, match=r"values has shape \[3, 4\].*repacked"):
        torch.ops.sparsekern._spmm_cuda(torch.zeros(3, 4, device=DEV, dtype=torch.float16),
                                        torch.zeros(1, 1, 16, device=DEV, dtype=torch.int32),
                                        torch.empty(0, device=DEV), 4, 8, "2:4", B, None, out)
    with pytest.raises(RuntimeError, match=r"B has shape \[8, 2\], expected \[K, N\] = \[9, N\]"):
        torch.ops.sparsekern._spmm_cuda(torch.zeros(1, device=DEV), torch.zeros(1, device=DEV),
                                        torch.zeros(1, device=DEV), 4, 9, "csc", B, None, out)


def test_cuda_backend_is_the_default_for_2_4_and_csc():
    dev = torch.device(DEV)
    assert select("2:4", torch.float16, torch.float16, dev) is cuda_backend
    assert select("csc", torch.float32, torch.float32, dev) is cuda_backend
