"""The Triton kernels against the float64 reference (Triton's interpreter on CPU here).

Small shapes and the interpreter's single small tile configuration keep these fast; the
same cases at realistic sizes on CUDA are in test_triton_gpu.py. Every comparison uses
fresh random inputs and the poison_output fixture (outputs start as NaN), so an element a
kernel forgets to write fails.
"""
import pytest
import torch

import sparsekern as sk
from sparsekern.backends import triton as triton_backend
from sparsekern.backends import use_backend
from tests.helpers import random_pattern_weight, rel_err
from tests.triton.launch import launch_into
from tests.triton.tolerance import tolerance

pytestmark = pytest.mark.usefixtures("triton_available", "poison_output")

LAYOUTS = ["2:4", "bsr", "csc"]
DTYPES = [torch.float32, torch.float16]
#: Interpreter float32 dots are exact float32; on a GPU they run in TF32 (tolerance.py).
TF32 = torch.cuda.is_available()


def tol(dtype, K):
    return tolerance(dtype, K, tf32=TF32)


def pack(W, layout, blocksize=(16, 16)):
    return sk.to_sparse(W, layout, blocksize=blocksize) if layout == "bsr" \
        else sk.to_sparse(W, layout)


def triton_out(A, B, bias=None):
    with use_backend("triton"):
        return torch.ops.sparsekern.spmm(*A.op_args(), B, bias)


def reference_out(A, B, bias=None):
    """The reference backend in float64 on the same stored entries."""
    values, indices, offsets, M, K, layout = A.op_args()
    with use_backend("reference"):
        return torch.ops.sparsekern.spmm(values.double(), indices, offsets, M, K, layout,
                                         B.double(), None if bias is None else bias.double())


def check(A, B, bias=None):
    out = triton_out(A, B, bias)
    M, K = A.shape
    assert out.shape == (M, B.shape[1]) and out.dtype == B.dtype
    ref = reference_out(A, B, bias)
    assert not out.isnan().any(), "an output element was not written (or is NaN)"
    assert rel_err(out, ref) < tol(B.dtype, K), rel_err(out, ref)
    return out


# (id, M, K, N, density, bias): the named edge cases of DESIGN.md.
CASES = [
    ("basic", 37, 70, 5, 0.3, True),
    ("n1", 24, 40, 1, 0.3, False),
    ("odd_m_k", 13, 29, 3, 0.4, True),        # K not a multiple of 4, of bk or of a tile
    ("m_below_block", 5, 48, 4, 0.5, True),   # M < the 16-row block / tile
    ("density1", 20, 36, 2, 1.0, False),
    ("density0", 18, 33, 3, 0.0, True),       # nothing stored (2:4 stores zeros): bias only
    ("two_n_tiles", 20, 24, 21, 0.3, False),  # N past one 16-wide N tile
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference(layout, dtype, case):
    _, M, K, N, density, with_bias = case
    W = random_pattern_weight(M, K, layout, density=density, blocksize=(16, 16), dtype=dtype)
    A = pack(W, layout)
    B = torch.randn(K, N).to(dtype)
    bias = torch.randn(M).to(dtype) if with_bias else None
    out = check(A, B, bias)
    if density == 0.0 and layout != "2:4":
        assert torch.equal(out, bias.unsqueeze(1).expand(M, N))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("M,K,N", [(0, 8, 3), (6, 0, 3), (6, 8, 0)], ids=["M0", "K0", "N0"])
def test_empty_shapes(layout, M, K, N):
    W = torch.zeros(M, K)
    A = pack(W, layout, blocksize=(4, 4))
    B = torch.randn(K, N)
    bias = torch.randn(M)
    out = triton_out(A, B, bias)
    assert out.shape == (M, N)
    assert torch.equal(out, bias.unsqueeze(1).expand(M, N))


def _b_of_kind(kind, K, N, dtype):
    if kind == "x_t":          # what sk.linear passes: B = x.T, column-major
        return torch.randn(N, K).to(dtype).t()
    if kind == "strided":      # every other column of a wider tensor
        return torch.randn(K, 2 * N).to(dtype)[:, ::2]
    if kind == "broadcast":    # stride 0 along N
        return torch.randn(K, 1).to(dtype).expand(K, N)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["x_t", "strided", "broadcast"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_b(layout, kind):
    M, K, N = 21, 44, 6
    W = random_pattern_weight(M, K, layout, density=0.4, blocksize=(16, 16), dtype=torch.float16)
    A = pack(W, layout)
    B = _b_of_kind(kind, K, N, torch.float16)
    check(A, B, torch.randn(M).half())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_writes_out_with_its_strides(layout):
    """The backend writes exactly the given out (here a column slice of a wider tensor)."""
    M, K, N = 19, 36, 5
    W = random_pattern_weight(M, K, layout, density=0.4, blocksize=(16, 16))
    A = pack(W, layout)
    B = torch.randn(K, N)
    big = torch.full((M, 2 * N + 1), 7.0)
    out = big[:, 1:2 * N + 1:2]
    triton_backend.spmm(*A.op_args(), B, None, out)
    assert rel_err(out, reference_out(A, B)) < tol(torch.float32, K)
    untouched = torch.ones(M, 2 * N + 1, dtype=torch.bool)
    untouched[:, 1:2 * N + 1:2] = False
    assert (big[untouched] == 7.0).all()


BLOCKS = [(16, 16), (32, 32), (8, 4), (1, 8), (8, 1), (24, 40), (3, 5), (64, 16)]


@pytest.mark.parametrize("blocksize", BLOCKS, ids=[f"{b[0]}x{b[1]}" for b in BLOCKS])
def test_bsr_any_block_shape(blocksize):
    """tl.dot-sized blocks, narrow blocks sharing a step, wide blocks cut into sub-tiles."""
    M, K, N = 50, 70, 3
    W = random_pattern_weight(M, K, "bsr", density=0.4, blocksize=blocksize,
                              dtype=torch.float16)
    A = pack(W, "bsr", blocksize)
    check(A, torch.randn(K, N).half(), torch.randn(M).half())


@pytest.mark.parametrize("split_k", [1, 2, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forced_split_k(layout, split_k):
    """Each private op with an explicit split (partials + the deterministic reduction)."""
    M, K, N = 33, 96, 4
    W = random_pattern_weight(M, K, layout, density=0.5, blocksize=(16, 16))
    A = pack(W, layout)
    B = torch.randn(K, N)
    bias = torch.randn(M)
    out = torch.full((M, N), float("nan"))
    launch_into(A, layout, M, K, B, bias, out, split_k)
    assert rel_err(out, reference_out(A, B, bias)) < tol(torch.float32, K)


def _with_stored_zeros(A):
    """A copy of A whose first stored values are explicit zeros (they still meet B)."""
    values = A.values.clone()
    flat = values.view(-1)
    flat[: max(1, flat.numel() // 5)] = 0
    return sk.formats.from_parts(A.layout, values, A.indices, A.offsets, A.shape)


def _weight_meeting_column_3(layout, M, K, dtype):
    """A random weight in which row 0 stores column 3 and row ``without`` does not."""
    W = random_pattern_weight(M, K, layout, density=0.3, blocksize=(8, 8), dtype=torch.float64)
    if layout == "bsr":
        W[0:8, 0:8] = torch.randn(8, 8, dtype=torch.float64)   # block (0, 0) stored
        W[8:16, 0:8] = 0                                       # block (1, 0) not
        without = 8
    elif layout == "2:4":
        W[0, 0:4] = torch.tensor([0.0, 0.0, 1.5, -0.5])        # keeps positions 2, 3
        W[1, 0:4] = torch.tensor([0.7, 1.1, 0.0, 0.0])         # keeps positions 0, 1
        without = 1
    else:
        W[0, 3], W[1, 3] = 1.25, 0.0
        without = 1
    return W.to(dtype), without


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_inf_in_b_meet_stored_entries_only(layout, dtype):
    """NaN/Inf in B propagate through stored entries (zeros too), never through pruned ones."""
    M, K, N = 23, 40, 5
    W, without = _weight_meeting_column_3(layout, M, K, dtype)
    A = _with_stored_zeros(pack(W, layout, (8, 8)))
    B = torch.randn(K, N).to(dtype)
    B[3, 0] = float("nan")
    B[3, 3] = float("inf")
    B[10, 1] = float("inf")
    B[11, 1] = float("-inf")
    B[20, 2] = float("inf")
    B[25:, 4] = float("-inf")
    out = triton_out(A, B).double()
    ref = reference_out(A, B).to(dtype).double()
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.isinf(), ref.isinf())
    assert torch.equal(out[out.isinf()], ref[ref.isinf()])
    finite = ref.isfinite()
    assert rel_err(out[finite], ref[finite]) < tol(dtype, K)
    # Row 0 stores column 3, where B has NaN (column 0) and +Inf (column 3); row `without`
    # prunes it and stays finite there.
    assert out[0, 0].isnan() and not out[0, 3].isfinite()
    assert out[without, 0].isfinite() and out[without, 3].isfinite()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_strided_and_expanded_bias(layout, dtype):
    """The kernels read bias[m] at bias_ptr + m: a strided bias (a column of a matrix, every
    other element) gave a wrong product, an expanded one (stride 0) read past its storage."""
    M, K, N = 21, 30, 5
    W = random_pattern_weight(M, K, layout, density=0.4, blocksize=(16, 16), dtype=dtype)
    A = pack(W, layout)
    B = torch.randn(K, N).to(dtype)
    for bias in (torch.randn(2 * M).to(dtype)[::2], torch.randn(M, 3).to(dtype)[:, 1],
                 torch.randn(1).to(dtype).expand(M)):
        assert not bias.is_contiguous()
        out = check(A, B, bias)
        with use_backend("reference"):
            want = torch.ops.sparsekern.spmm(*A.op_args(), B, bias.contiguous())
        assert rel_err(out, want) < tol(dtype, K)
    # the launchers themselves (the private ops' entry), split-K included
    from sparsekern import triton as kernels
    bias = torch.randn(3 * M).to(dtype)[::3]
    values, indices, offsets = A.values, A.indices, A.offsets
    for split_k in (1, 2):
        out = torch.full((M, N), float("nan"), dtype=dtype)
        if layout == "bsr":
            kernels.triton_bsr(values, indices, offsets, M, K, B, bias, out, split_k)
        elif layout == "2:4":
            kernels.triton_semi24(values, indices, M, K, B, bias, out, split_k)
        else:
            s = kernels.build_row_strips(values, indices, offsets, M, K)
            kernels.triton_csc(s.values, s.cols, s.rows, s.ptr, M, K, B, bias, out, split_k)
        assert rel_err(out, reference_out(A, B, bias)) < tol(dtype, K), split_k
