"""The op sparsekern::spmm on the default CPU dispatch and the reference backend.

Each case compares with a float64 dense product of the same weight on fresh random inputs.
"""
import pytest
import torch

import sparsekern as sk
from tests.helpers import TOL, dense_ref, random_pattern_weight, rel_err

LAYOUTS = [("2:4", None), ("csc", None), ("bsr", (4, 4)), ("bsr", (16, 8)), ("bsr", (1, 8)),
           ("bsr", (8, 1))]
BACKENDS = ["default", "reference"]


def pack(W, layout, blocksize):
    return sk.to_sparse(W, layout=layout, blocksize=blocksize)


def run(backend, fn):
    if backend == "default":
        return fn()
    with sk.use_backend(backend):
        return fn()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_matches_dense_float64(layout, blocksize, dtype, backend, poison_output):
    M, K, N = 37, 70, 9
    W = random_pattern_weight(M, K, layout, density=0.3, blocksize=blocksize or (4, 4), dtype=dtype)
    B = torch.randn(K, N, dtype=dtype)
    bias = torch.randn(M, dtype=dtype)
    A = pack(W, layout, blocksize)
    out = run(backend, lambda: sk.spmm(A, B, bias))
    assert out.shape == (M, N) and out.dtype == dtype
    assert rel_err(out, dense_ref(W, B, bias)) < TOL[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
@pytest.mark.parametrize("M,K,N", [
    (33, 65, 1),     # N=1 (GEMV)
    (13, 7, 5),      # K not a multiple of 4 / bk
    (2, 10, 3),      # M smaller than a block
    (1, 1, 1),       # tiny
    (64, 128, 17),   # odd N
])
def test_edge_shapes(layout, blocksize, M, K, N, backend, poison_output):
    W = random_pattern_weight(M, K, layout, density=0.4, blocksize=blocksize or (4, 4))
    B = torch.randn(K, N)
    A = pack(W, layout, blocksize)
    out = run(backend, lambda: sk.spmm(A, B))
    assert rel_err(out, dense_ref(W, B)) < TOL[torch.float32]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
@pytest.mark.parametrize("M,K,N", [(0, 8, 3), (5, 0, 3), (5, 8, 0), (0, 0, 0)])
def test_empty(layout, blocksize, M, K, N, backend):
    W = torch.zeros(M, K)
    A = pack(W, layout, blocksize)
    bias = torch.randn(M)
    out = run(backend, lambda: sk.spmm(A, torch.randn(K, N), bias))
    assert out.shape == (M, N)
    assert torch.equal(out, bias.unsqueeze(1).expand(M, N))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_density_zero_and_one(layout, blocksize, backend, poison_output):
    M, K, N = 24, 40, 6
    B = torch.randn(K, N)
    bias = torch.randn(M)
    A0 = pack(torch.zeros(M, K), layout, blocksize)
    out = run(backend, lambda: sk.spmm(A0, B, bias))
    assert torch.equal(out, bias.unsqueeze(1).expand(M, N))
    if layout == "2:4":
        W1 = random_pattern_weight(M, K, "2:4", density=0.5)  # the densest 2:4
    else:
        W1 = torch.randn(M, K)
    A1 = pack(W1, layout, blocksize)
    out = run(backend, lambda: sk.spmm(A1, B, bias))
    assert rel_err(out, dense_ref(W1, B, bias)) < TOL[torch.float32]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
@pytest.mark.parametrize("make_b", ["transposed", "strided_rows", "strided_cols", "expanded"])
def test_non_contiguous_B(layout, blocksize, make_b, backend, poison_output):
    M, K, N = 21, 36, 7
    W = random_pattern_weight(M, K, layout, density=0.4, blocksize=blocksize or (4, 4))
    if make_b == "transposed":
        B = torch.randn(N, K).t()
    elif make_b == "strided_rows":
        B = torch.randn(2 * K, N)[::2]
    elif make_b == "strided_cols":
        B = torch.randn(K, 3 * N)[:, ::3]
    else:
        B = torch.randn(K, 1).expand(K, N)
    assert not B.is_contiguous()
    A = pack(W, layout, blocksize)
    out = run(backend, lambda: sk.spmm(A, B))
    assert rel_err(out, dense_ref(W, B)) < TOL[torch.float32]


def test_output_strides_follow_B():
    A = sk.to_sparse(random_pattern_weight(8, 12, "csc"), layout="csc")
    assert sk.spmm(A, torch.randn(12, 5)).is_contiguous()
    out = sk.spmm(A, torch.randn(5, 12).t())
    assert out.t().is_contiguous()  # column-major, so linear's result needs no copy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_gemv_with_1d_B(layout, blocksize, backend):
    W = random_pattern_weight(19, 23, layout, blocksize=blocksize or (4, 4))
    x = torch.randn(23)
    A = pack(W, layout, blocksize)
    y = run(backend, lambda: sk.spmm(A, x))
    assert y.shape == (19,)
    assert rel_err(y, W.double() @ x.double()) < TOL[torch.float32]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_nan_and_inf_in_B_propagate_through_stored_entries(layout, blocksize, backend):
    M, K, N = 12, 16, 3
    W = random_pattern_weight(M, K, layout, density=0.5, blocksize=blocksize or (4, 4))
    A = pack(W, layout, blocksize)
    B = torch.randn(K, N)
    B[3, 0] = float("nan")
    B[5, 1] = float("inf")
    out = run(backend, lambda: sk.spmm(A, B))
    # Rows that store an entry in column 3 (resp. 5) get NaN (resp. NaN or +-inf); others finite.
    stored = A.to_dense() != 0
    with sk.use_backend("reference"):
        ref = sk.spmm(A, B)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    assert torch.equal(torch.isinf(out), torch.isinf(ref))
    assert bool(torch.isnan(out[stored[:, 3], 0]).all())
    assert bool(torch.isfinite(out[:, 2]).all())


def test_nan_propagates_through_stored_zero_like_torch_sparse():
    # A 2:4 group with one nonzero also stores a zero; 0 * NaN is NaN (torch.sparse does the same
    # for its explicit zeros); a group that stores nothing for column k gets no NaN.
    W = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    A = sk.to_sparse(W, layout="2:4")  # row 0 stores columns (0, 1); row 1 stores (0, 3)
    B = torch.tensor([[1.0], [float("nan")], [1.0], [1.0]])
    out = sk.spmm(A, B)
    assert torch.isnan(out[0, 0]) and out[1, 0] == 2.0


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_default_and_reference_agree(layout, blocksize):
    W = random_pattern_weight(50, 60, layout, blocksize=blocksize or (4, 4))
    A = pack(W, layout, blocksize)
    B = torch.randn(60, 11)
    with sk.use_backend("reference"):
        ref = sk.spmm(A, B)
    assert rel_err(sk.spmm(A, B), ref) < TOL[torch.float32]


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_mixed_half_weights_float32_activations(layout, blocksize):
    W = random_pattern_weight(16, 24, layout, blocksize=blocksize or (4, 4), dtype=torch.bfloat16)
    A = pack(W, layout, blocksize)
    B = torch.randn(24, 5)
    out = sk.spmm(A, B)
    assert out.dtype == torch.float32
    assert rel_err(out, dense_ref(W, B)) < TOL[torch.float32]


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_linear_matches_dense(layout, blocksize):
    W = random_pattern_weight(20, 30, layout, blocksize=blocksize or (4, 4))
    A = pack(W, layout, blocksize)
    x = torch.randn(2, 3, 30)
    bias = torch.randn(20)
    y = sk.linear(x, A, bias)
    assert y.shape == (2, 3, 20) and y.is_contiguous()
    ref = x.double() @ W.double().t() + bias.double()
    assert rel_err(y, ref) < TOL[torch.float32]
    y0 = sk.linear(torch.randn(0, 30), A)
    assert y0.shape == (0, 20)


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_opcheck(layout, blocksize):
    W = random_pattern_weight(10, 14, layout, blocksize=blocksize or (4, 4))
    A = pack(W, layout, blocksize)
    values = A.values.clone().requires_grad_()
    for B in (torch.randn(14, 3, requires_grad=True), torch.randn(3, 14).t().requires_grad_()):
        for bias in (None, torch.randn(10, requires_grad=True)):
            torch.library.opcheck(torch.ops.sparsekern.spmm,
                                  (values, A.indices, A.offsets, 10, 14, layout, B, bias))


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_gradcheck_float64(layout, blocksize):
    W = random_pattern_weight(7, 11, layout, density=0.5, blocksize=blocksize or (4, 4),
                              dtype=torch.float64)
    A = pack(W, layout, blocksize)
    values = A.values.clone().requires_grad_()
    B = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)

    def f(v, b, c):
        return torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 7, 11, layout, b, c)

    assert torch.autograd.gradcheck(f, (values, B, bias))


def test_grad_for_values_is_zero_on_padding():
    W = random_pattern_weight(3, 5, "2:4", density=0.5)  # K=5: group 1 is padded to 8
    A = sk.to_sparse(W, layout="2:4")
    values = A.values.clone().requires_grad_()
    out = torch.ops.sparsekern.spmm(values, A.indices, A.offsets, 3, 5, "2:4", torch.randn(5, 2))
    out.sum().backward()
    cols = sk.formats.semi24.semi24_columns(A.indices, 5)
    assert bool((values.grad[cols >= 5] == 0).all())


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_torch_compile_fullgraph(layout, blocksize):
    W = random_pattern_weight(16, 24, layout, blocksize=blocksize or (4, 4))
    A = pack(W, layout, blocksize)
    bias = torch.randn(16)

    @torch.compile(fullgraph=True, backend="inductor")
    def f(x):
        return torch.relu(sk.linear(x, A, bias)) * 2.0

    x = torch.randn(5, 24)
    ref = torch.relu(x.double() @ W.double().t() + bias.double()) * 2.0
    assert rel_err(f(x), ref) < TOL[torch.float32]
    x2 = torch.randn(9, 24)  # a second batch size (dynamic shapes)
    ref2 = torch.relu(x2.double() @ W.double().t() + bias.double()) * 2.0
    assert rel_err(f(x2), ref2) < TOL[torch.float32]


def test_torch_compile_training_step():
    W = random_pattern_weight(8, 12, "csc")
    lin = torch.nn.Linear(12, 8)
    with torch.no_grad():
        lin.weight.copy_(W)
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(4, 12, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    compiled(x).pow(2).sum().backward()
    g_compiled = (layer.values.grad.clone(), x.grad.clone())
    layer.values.grad = None
    x.grad = None
    layer(x).pow(2).sum().backward()
    assert torch.allclose(g_compiled[0], layer.values.grad, atol=1e-5)
    assert torch.allclose(g_compiled[1], x.grad, atol=1e-5)
