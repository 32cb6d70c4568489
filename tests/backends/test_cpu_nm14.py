"""The 1:4 kernels (csrc/cpu/nm14.cpp): the GEMV and the batched panel kernel, every ISA the
machine has, against the float64 reference on edge shapes. Both serve the C++ fast path with
nothing cached; the Python path (a forced backend, autograd) still runs through the 2:4 copy."""
import math

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension
from sparsekern.backends import reference

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
C = _extension._C


def _isa_params():
    have = {"portable"} | {isa for isa, ok in (("avx2", C is not None and C.cpu_has_avx2()),
                                                 ("avx512", C is not None and C.cpu_has_avx512()))
                           if ok}
    return [pytest.param(isa, marks=pytest.mark.skipif(isa not in have,
                                                       reason=f"this CPU/OS has no {isa}"))
            for isa in ("portable", "avx2", "avx512")]


def one_of_four(M, K, seed=0, dtype=torch.float32, empty=0.2):
    """[M, K] with one nonzero in each group of 4 along K (some groups empty)."""
    g = torch.Generator().manual_seed(seed)
    G = math.ceil(K / 4)
    W = torch.randn(M, G, 4, generator=g)
    keep = torch.randint(0, 4, (M, G), generator=g)
    W = W * torch.nn.functional.one_hot(keep, 4) * (torch.rand(M, G, 1, generator=g) >= empty)
    return W.reshape(M, 4 * G)[:, :K].to(dtype).contiguous()


def ref(A, B, bias=None):
    M, K = A.shape
    out = torch.empty(M, B.shape[1], dtype=torch.float64)
    return reference.spmm(A.values.double(), A.indices, A.offsets, M, K, "1:4", B.double(),
                          None if bias is None else bias.double(), out)


SHAPES = [(1, 1), (5, 3), (3, 17), (67, 53), (128, 96), (130, 260), (9, 513), (37, 1030)]


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_gemv_matches_reference_on_every_isa(isa, shape, dtype, cpu_isa_env):
    cpu_isa_env(isa)
    M, K = shape
    A = sk.to_sparse(one_of_four(M, K, seed=M * K, dtype=dtype), layout="1:4")
    g = torch.Generator().manual_seed(K)
    bias = torch.randn(M, generator=g)
    for B in (torch.randn(K, 1, generator=g),                      # a column
              torch.randn(1, K, generator=g).t(),                  # x.T of a Linear
              torch.randn(2 * K, 3, generator=g)[::2, 1:2]):       # strided
        for b in (None, bias):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, b)
            assert out.shape == (M, 1) and out.dtype == torch.float32
            torch.testing.assert_close(out.double(), ref(A, B, b), rtol=1e-5, atol=1e-5)
    assert not hasattr(A.values, "_sparsekern_repack"), "N == 1 built the 2:4 copy"


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_batched_matches_reference_on_every_isa(isa, shape, dtype, cpu_isa_env):
    # N in the AVX-512 small-N kernel (2..6) and across panel widths (AVX2 32 columns,
    # AVX-512 64) with their tails; row-major, column-major (a Linear's x.T) and strided B.
    cpu_isa_env(isa)
    M, K = shape
    A = sk.to_sparse(one_of_four(M, K, seed=M + K, dtype=dtype), layout="1:4")
    g = torch.Generator().manual_seed(M)
    bias = torch.randn(M, generator=g)
    atol = 1e-5 * max(1.0, K / 256)  # float32 sums of K / 4 products in a panel's order
    for N in (2, 3, 6, 7, 17, 64, 70):
        for B in (torch.randn(K, N, generator=g),
                  torch.randn(N, K, generator=g).t(),
                  torch.randn(2 * K, N + 2, generator=g)[::2, 1:N + 1]):
            for b in (None, bias):
                out = torch.ops.sparsekern.spmm(*A.op_args(), B, b)
                assert out.shape == (M, N) and out.dtype == torch.float32
                torch.testing.assert_close(out.double(), ref(A, B, b), rtol=1e-5, atol=atol)
    assert not hasattr(A.values, "_sparsekern_repack"), "the fast path built the 2:4 copy"


@pytest.mark.parametrize("isa", _isa_params())
def test_positions_in_the_padded_columns_never_count(isa, cpu_isa_env):
    cpu_isa_env(isa)
    M, K = 6, 70  # 18 groups; group 17 holds columns 68, 69 and two padded ones
    A = sk.to_sparse(one_of_four(M, K, empty=0.0), layout="1:4")
    idx, vals = A.indices.clone(), A.values.clone()
    idx[:, -1] |= 0b11 << 2 * (17 % 4)  # group 17 -> position 3: column 71 >= K
    vals[:, -1] = 1e30
    W = A.to_dense()
    W[:, 68:] = 0  # what remains of the weight: group 17 holds nothing inside [0, K)
    for N in (1, 5, 40):
        x = torch.randn(K, N)
        got = torch.ops.sparsekern.spmm(vals, idx, A.offsets, M, K, "1:4", x)
        torch.testing.assert_close(got.double(), W.double() @ x.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", _isa_params())
def test_non_finite_activations_meet_every_stored_value(isa, cpu_isa_env):
    # An empty group stores 0 at position 0: an Inf there gives NaN, as in the reference.
    cpu_isa_env(isa)
    M, K = 19, 200
    A = sk.to_sparse(one_of_four(M, K, seed=4, empty=0.3), layout="1:4")
    for N in (1, 3, 33):
        x = torch.randn(K, N)
        x[torch.randperm(K)[:12], 0] = float("inf")
        x[7, N - 1] = float("nan")
        out = torch.ops.sparsekern.spmm(*A.op_args(), x)
        want = ref(A, x)
        assert not torch.isfinite(want).all()
        assert torch.equal(torch.isnan(out), torch.isnan(want))
        assert torch.equal(torch.isinf(out), torch.isinf(want))
        fin = torch.isfinite(want)
        torch.testing.assert_close(out.double()[fin], want[fin], rtol=1e-5, atol=1e-5)


def test_threads_and_batched_calls_agree(cpu_isa_env):
    M, K = 1024, 768
    A = sk.to_sparse(one_of_four(M, K, seed=1), layout="1:4")
    X = torch.randn(K, 5)
    prev = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cols = torch.cat([torch.ops.sparsekern.spmm(*A.op_args(), X[:, j:j + 1])
                              for j in range(5)], 1)
            batched = torch.ops.sparsekern.spmm(*A.op_args(), X)
            with sk.use_backend("cpu"):  # the Python path: the cached 2:4 copy
                lowered = torch.ops.sparsekern.spmm(*A.op_args(), X)
            # float32 sums of K/4 = 192 products of ~N(0, 1) terms: outputs up to ~40, so an
            # absolute 1e-5 is below one float32 step of the larger ones (CI's portable path
            # once missed it by 2e-6); 1e-4 is still a few steps.
            torch.testing.assert_close(cols.double(), ref(A, X), rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(cols, batched, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(lowered, batched, rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(prev)
    assert hasattr(A.values, "_sparsekern_repack")  # the Python path built the 2:4 copy


def test_values_written_in_place_are_read_at_the_next_call():
    # Nothing is cached on the fast path: a write the version counter misses is seen at once.
    M, K = 40, 64
    A = sk.to_sparse(one_of_four(M, K, seed=2, empty=0.0), layout="1:4")
    for N in (1, 7):
        x = torch.randn(K, N)
        before = torch.ops.sparsekern.spmm(*A.op_args(), x)
        A.values.data.mul_(2.0)
        after = torch.ops.sparsekern.spmm(*A.op_args(), x)
        torch.testing.assert_close(after, 2 * before)
        torch.testing.assert_close(after.double(), ref(A, x), rtol=1e-5, atol=1e-5)
