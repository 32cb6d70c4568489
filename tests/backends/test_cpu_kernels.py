"""The compiled CPU kernels (csrc/cpu) against the float64 reference backend.

Every layout x weight dtype x shape, with N = 1 (GEMV) and batched N, row-major,
column-major (what sk.linear passes) and strided B, with and without bias. Run once as is
(AVX2 where the CPU has it) and once with SPARSEKERN_CPU_ISA=portable to cover both paths;
test_cpu_isa.py also compares the two inside one run.
"""
import math

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension
from sparsekern.backends import reference

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread here (fast on a loaded machine); test_cpu_threads.py covers more."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)

BSR_BLOCKS = [(32, 32), (16, 16), (64, 64), (1, 8), (4, 1), (8, 1), (3, 5), (2, 16), (8, 8)]
LAYOUTS = [("2:4", None)] + [("bsr", b) for b in BSR_BLOCKS] + [("csc", None)]
SHAPES = [(1, 1), (5, 3), (67, 53), (128, 96), (130, 260)]
NS = [1, 2, 7, 8, 17, 32, 40]
WEIGHT_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def layout_id(case):
    layout, block = case
    return layout if block is None else f"bsr{block[0]}x{block[1]}"


def make_weight(M, K, layout, block, density=0.35, dtype=torch.float32, seed=0):
    """A dense [M, K] weight whose zeros follow the layout's pattern, exactly in `dtype`."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        Kp = math.ceil(K / 4) * 4
        Wp = torch.nn.functional.pad(W, (0, Kp - K)).reshape(M, Kp // 4, 4)
        keep = min(2, max(0, round(density * 4))) if density < 1 else 2
        drop = Wp.abs().argsort(-1)[..., : 4 - keep]
        Wp = Wp.scatter(-1, drop, 0.0)
        W = Wp.reshape(M, Kp)[:, :K]
    elif layout == "bsr":
        bm, bk = block
        Mb, Kb = math.ceil(M / bm), math.ceil(K / bk)
        mask = torch.rand(Mb, Kb, generator=g) < density
        W = W * mask.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    else:
        W = W * (torch.rand(M, K, generator=g) < density)
    return W.to(dtype).contiguous()


def pack(W, layout, block):
    return sk.to_sparse(W, layout=layout, blocksize=block) if layout == "bsr" else \
        sk.to_sparse(W, layout=layout)


def ref_spmm(A, B, bias=None, magnitude=False):
    """float64 oracle: the reference backend on the same stored values. ``magnitude``:
    |A| @ |B| + |bias| instead, the size of the terms each output sums (its rounding
    error's scale)."""
    M, K = A.shape
    out = torch.empty(M, B.shape[1], dtype=torch.float64)
    f = torch.abs if magnitude else (lambda t: t)
    return reference.spmm(f(A.values.double()), A.indices, A.offsets, M, K, A.layout,
                          f(B.double()), None if bias is None else f(bias.double()), out)


def rel_err(out, ref):
    ref = ref.double()
    denom = ref.norm().item()
    diff = (out.double() - ref).norm().item()
    return diff / denom if denom > 0 else diff


def b_variants(K, N, seed=1):
    """B [K, N] row-major, column-major (x.T) and strided (a slice of a bigger tensor)."""
    g = torch.Generator().manual_seed(seed)
    yield "row-major", torch.randn(K, N, generator=g)
    yield "column-major", torch.randn(N, K, generator=g).t()
    yield "strided", torch.randn(2 * K + 1, 3 * N + 2, generator=g)[1::2, 2::3]


def check_call(A, B, bias, tol=1e-5):
    """The op against the float64 oracle, the error relative to the size of the terms
    summed: an output that cancels to near zero (w * x + bias ~ 0) is allowed float32's
    rounding of its terms, not of itself."""
    out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
    ref = ref_spmm(A, B, bias)
    assert out.shape == ref.shape and out.dtype == torch.float32
    scale = ref_spmm(A, B, bias, magnitude=True).norm().item()
    err = (out.double() - ref).norm().item() / scale if scale > 0 else rel_err(out, ref)
    assert err < tol, f"relative error {err:.3g}"
    return out


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", WEIGHT_DTYPES, ids=str)
def test_matches_reference(case, shape, dtype):
    layout, block = case
    M, K = shape
    A = pack(make_weight(M, K, layout, block, dtype=dtype), layout, block)
    bias = torch.randn(M)
    for i, N in enumerate(NS):
        for j, (name, B) in enumerate(b_variants(K, N)):
            bb = bias if (i + j) % 2 else None
            if True:
                try:
                    check_call(A, B, bb)
                except AssertionError as e:
                    raise AssertionError(f"N={N}, B {name}, bias={bb is not None}: {e}") from e


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
def test_output_strides_follow_B(case):
    layout, block = case
    A = pack(make_weight(40, 24, layout, block), layout, block)
    x = torch.randn(9, 24)
    out = torch.ops.sparsekern.spmm(*A.op_args(), x.t())
    assert out.stride() == (1, 40)  # column-major B -> column-major out
    out = torch.ops.sparsekern.spmm(*A.op_args(), x.t().contiguous())
    assert out.stride() == (9, 1)


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("K", [1, 2, 3, 5, 7, 9, 13, 17, 31, 33, 65])
def test_odd_K(case, K):
    layout, block = case
    A = pack(make_weight(19, K, layout, block), layout, block)
    for N in (1, 9):
        check_call(A, torch.randn(K, N), torch.randn(19))


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_density_extremes(case, density):
    layout, block = case
    W = make_weight(37, 45, layout, block, density=density)
    A = pack(W, layout, block)
    bias = torch.randn(37)
    for N in (1, 12):
        B = torch.randn(45, N)
        out = check_call(A, B, bias)
        if density == 0.0:
            torch.testing.assert_close(out, bias[:, None].expand(37, N), rtol=0, atol=0)


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("MKN", [(0, 8, 3), (8, 0, 3), (8, 8, 0), (0, 0, 0), (1, 1, 1)])
def test_empty_and_tiny(case, MKN):
    layout, block = case
    M, K, N = MKN
    A = pack(make_weight(M, K, layout, block), layout, block)
    bias = torch.randn(M)
    B = torch.randn(K, N)
    out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
    assert out.shape == (M, N)
    expected = bias[:, None].expand(M, N) if K == 0 or M * N == 0 else \
        ref_spmm(A, B, bias).float()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
def test_poisoned_output(case, poison_output):
    """Outputs start as NaN (Python path + _spmm_cpu): every element must be written."""
    layout, block = case
    for M, K in [(67, 53), (5, 3)]:
        A = pack(make_weight(M, K, layout, block, density=0.2), layout, block)
        for N in (1, 3, 8, 33):
            for _, B in b_variants(K, N):
                check_call(A, B, None)
                check_call(A, B, torch.randn(M))


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
def test_nan_inf_in_B_propagate_through_stored_entries(case):
    layout, block = case
    M, K = 33, 40
    A = pack(make_weight(M, K, layout, block, density=0.4), layout, block)
    for N in (1, 10):
        B = torch.randn(K, N)
        B[3, 0] = float("nan")
        B[17, -1] = float("inf")
        B[-1, 0] = float("-inf")
        out = torch.ops.sparsekern.spmm(*A.op_args(), B)
        ref = ref_spmm(A, B)
        assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN pattern differs"
        assert torch.equal(torch.isinf(out), torch.isinf(ref)), "Inf pattern differs"
        fin = torch.isfinite(ref)
        torch.testing.assert_close(out.double()[fin], ref[fin], rtol=1e-5, atol=1e-5)


def test_served_1to4_meets_non_finite_values_only_through_its_own_entries():
    """1:4 runs as a 2:4 copy whose second slot in each group is a stored zero the 1:4 weight
    does not have: an Inf or NaN there must not turn into 0 * Inf = NaN (the forward with B,
    the input gradient with G), as the reference backend, which walks 1:4's entries, shows."""
    from sparsekern.backends import cpu
    M, K = 21, 38
    g = torch.Generator().manual_seed(3)
    W = torch.randn(M, K, generator=g)
    Wp = torch.nn.functional.pad(W, (0, 2)).reshape(M, -1, 4)
    keep = torch.randint(0, 4, Wp.shape[:2], generator=g)
    W = (Wp * torch.nn.functional.one_hot(keep, 4)).reshape(M, -1)[:, :K].contiguous()
    A = sk.to_sparse(W, layout="1:4")
    for N in (1, 7):
        X = torch.randn(K, N, generator=g)
        X[torch.rand(K, N, generator=g) < 0.2] = float("inf")
        X[5, 0] = float("nan")
        X[-1, -1] = float("-inf")
        out = torch.ops.sparsekern.spmm(*A.op_args(), X)
        ref = ref_spmm(A, X)
        assert torch.isfinite(ref).any() and not torch.isfinite(ref).all()
        assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN pattern differs"
        assert torch.equal(torch.isinf(out), torch.isinf(ref)), "Inf pattern differs"
        fin = torch.isfinite(ref)
        torch.testing.assert_close(out.double()[fin], ref[fin], rtol=1e-5, atol=1e-5)
        G = torch.randn(M, N, generator=g)
        G[torch.rand(M, N, generator=g) < 0.2] = float("inf")
        got = cpu.spmm_transposed(A.values, A.indices, A.offsets, M, K, "1:4", G)
        want = reference.spmm_transposed(A.values.double(), A.indices, A.offsets, M, K, "1:4",
                                         G.double())
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        fin = torch.isfinite(want)
        torch.testing.assert_close(got.double()[fin], want[fin], rtol=1e-5, atol=1e-5)
        # finite inputs still take the 2:4 kernel and agree
        Xf = torch.randn(K, N, generator=g)
        torch.testing.assert_close(torch.ops.sparsekern.spmm(*A.op_args(), Xf).double(),
                                   ref_spmm(A, Xf), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("N", [1, 7, 32, 64, 260])  # 260: AVX-512's sorted 2:4 kernel
def test_semi24_input_gradient_meets_non_finite_G_only_through_stored_entries(N):
    """A.T @ G for 2:4: from 32 columns on it ran as a dense GEMM of the decompressed weight,
    whose unstored zeros met an Inf of G (0 * Inf = NaN) where the entry-wise kernel and the
    reference add nothing."""
    M, K = 24, 40
    g = torch.Generator().manual_seed(N)
    A = pack(make_weight(M, K, "2:4", None, density=0.5, seed=N), "2:4", None)
    G = torch.randn(M, N, generator=g)
    G[torch.rand(M, N, generator=g) < 0.1] = float("inf")
    G[3, 0] = float("nan")
    got = torch.ops.sparsekern._spmm_transposed_cpu(A.values, A.indices, A.offsets, M, K, "2:4",
                                                    G)
    want = reference.spmm_transposed(A.values.double(), A.indices, A.offsets, M, K, "2:4",
                                     G.double())
    assert torch.isfinite(want).any() and not torch.isfinite(want).all()
    assert torch.equal(torch.isnan(got), torch.isnan(want)), "NaN pattern differs"
    assert torch.equal(torch.isinf(got), torch.isinf(want)), "Inf pattern differs"
    fin = torch.isfinite(want)
    torch.testing.assert_close(got.double()[fin], want[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("G_layout", ["row-major", "column-major", "row-strided", "sliced"])
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_semi24_input_gradient_finite_check_sees_one_value_anywhere(G_layout, bad):
    """The finite check before the dense GEMM (one pass over G, any of its layouts) must see a
    single non-finite value wherever it sits: first, last, or in the middle of G."""
    M, K, N = 20, 36, 40
    A = pack(make_weight(M, K, "2:4", None, density=0.5, seed=7), "2:4", None)
    g = torch.Generator().manual_seed(11)
    for pos in [(0, 0), (M - 1, N - 1), (M // 2, N // 3)]:
        base = torch.randn(2 * M, 2 * N, generator=g)
        G = {"row-major": base[:M, :N].contiguous(),
             "column-major": base[:N, :M].contiguous().t(),
             "row-strided": base[:M, :N],
             "sliced": base[::2, ::2][:M, :N]}[G_layout]
        G[pos] = bad
        got = torch.ops.sparsekern._spmm_transposed_cpu(A.values, A.indices, A.offsets, M, K,
                                                        "2:4", G)
        want = reference.spmm_transposed(A.values.double(), A.indices, A.offsets, M, K, "2:4",
                                         G.double())
        assert torch.equal(torch.isnan(got), torch.isnan(want)), (G_layout, pos)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), (G_layout, pos)
        fin = torch.isfinite(want)
        torch.testing.assert_close(got.double()[fin], want[fin], rtol=1e-5, atol=1e-5)
    finite = torch.randn(M, N, generator=g)
    got = torch.ops.sparsekern._spmm_transposed_cpu(A.values, A.indices, A.offsets, M, K, "2:4",
                                                    finite)
    torch.testing.assert_close(got, A.to_dense().t() @ finite, rtol=1e-5, atol=1e-5)


def _transposed_case(M, K, N, dtype, G_layout, threads, g):
    """One 2:4 A.T @ G through the CPU op against the float64 reference."""
    A = pack(make_weight(M, K, "2:4", None, density=0.5, dtype=dtype,
                         seed=int(torch.randint(1 << 30, (1,), generator=g))), "2:4", None)
    S = 2 * max(M, N) + 1
    base = torch.randn(S, S, generator=g)
    G = {"row-major": base[:M, :N].contiguous(), "column-major": base[:N, :M].contiguous().t(),
         "sliced": base[::2, ::2][:M, :N]}[G_layout]
    torch.set_num_threads(threads)
    got = torch.ops.sparsekern._spmm_transposed_cpu(A.values, A.indices, A.offsets, M, K, "2:4", G)
    want = reference.spmm_transposed(A.values.double(), A.indices, A.offsets, M, K, "2:4",
                                     G.double())
    assert got.shape == (K, N) and got.is_contiguous() and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4,
                               msg=lambda m: f"{M}x{K} N={N} {dtype} {G_layout} {threads}t: {m}")
    return got


def test_semi24_input_gradient_sorted_kernel():
    """A.T @ G for 2:4 from 256 columns on (AVX-512: every group's rows sorted by 512-row block
    and position pair, 64-column panels of G): rows in several blocks (1100), K in a partial
    last group, a partial last panel, the three weight dtypes, G row-major / column-major (a
    Linear's dY.T) / sliced, one and two threads; the shapes alternate, so the per-thread
    sort buffer grows and shrinks between calls. Fresh random inputs each run."""
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, (1,))))
    cases = [(1100, 70, 300), (37, 4, 256), (600, 257, 257), (1100, 70, 300), (8, 9, 320)]
    for (M, K, N), dtype, G_layout, threads in zip(
            cases * 6, WEIGHT_DTYPES * 10, ["row-major", "column-major", "sliced"] * 10,
            [1, 2] * 15):
        _transposed_case(M, K, N, dtype, G_layout, threads, g)


@pytest.mark.parametrize("N", [1, 2, 8, 16, 31])
@pytest.mark.parametrize("G_layout", ["row-major", "column-major", "sliced"])
def test_semi24_backward_products_at_few_columns(N, G_layout):
    """Below 32 columns the 2:4 backward products run on the decompressed weight too (3-25x
    faster than the entry-wise kernels), A.T @ G as (G.T @ W).T made row-major: both against
    the reference, every weight dtype, G in each layout."""
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, (1,))))
    for dtype in WEIGHT_DTYPES:
        M, K = 70, 54
        t = _transposed_case(M, K, N, dtype, G_layout, 1 + N % 2, g)
        assert t.is_contiguous()
        A = pack(make_weight(M, K, "2:4", None, density=0.5, dtype=dtype, seed=N), "2:4", None)
        G = torch.randn(M, N, generator=g)
        B = torch.randn(N, K, generator=g).t()  # a Linear's x.T
        got = torch.ops.sparsekern._sampled_dot_cpu(A.values, A.indices, A.offsets, M, K, "2:4",
                                                    G, B)
        want = reference.sampled_dot(A.values.double(), A.indices, A.offsets, M, K, "2:4",
                                     G.double(), B.double())
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        assert got.dtype == dtype and got.shape == A.values.shape
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_semi24_input_gradient_sorted_kernel_same_bits_at_any_thread_count():
    """Each output element is summed by one thread in a fixed order."""
    got = [_transposed_case(1100, 200, 300, torch.float32, "column-major", t,
                            torch.Generator().manual_seed(3)) for t in (1, 2)]
    assert torch.equal(got[0], got[1])


def test_semi24_input_gradient_sorted_kernel_ignores_the_padding():
    """Positions past K in the last group (K % 4 != 0) never count, whatever value they hold."""
    M, K, N = 40, 30, 256
    A = pack(make_weight(M, K, "2:4", None, density=0.5, seed=1), "2:4", None)
    values, meta = A.values.clone(), A.indices.clone()
    last = (K + 3) // 4 - 1  # group 7: columns 28..31, of which 30 and 31 are padding
    byte, shift = last // 2, 4 * (last % 2)
    meta[:, byte] = (meta[:, byte] & ~(0xF << shift)) | ((1 | 3 << 2) << shift)  # positions 1, 3
    values[:, 2 * last + 1] = float("inf")  # the weight at column 31
    G = torch.randn(M, N)
    got = torch.ops.sparsekern._spmm_transposed_cpu(values, meta, A.offsets, M, K, "2:4", G)
    want = reference.spmm_transposed(values.double(), meta, A.offsets, M, K, "2:4", G.double())
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("product", ["input gradient", "values' gradient"])
@pytest.mark.parametrize("row,group", [(0, 0), (650, 99), (699, 50)])
def test_semi24_sorted_kernels_reject_bad_positions(row, group, product):
    """A nibble whose first position is not below the second, in any row and any group (the
    input gradient's sort runs in tiles of 64 groups, the values' gradient in row blocks, on
    two threads), is reported, not summed."""
    M, K, N = 700, 400, 600
    A = pack(make_weight(M, K, "2:4", None, density=0.5, seed=2), "2:4", None)
    meta = A.indices.clone()
    byte, shift = group // 2, 4 * (group % 2)
    meta[row, byte] = (meta[row, byte] & ~(0xF << shift)) | ((2 | 1 << 2) << shift)  # (2, 1)
    torch.set_num_threads(2)
    with pytest.raises(ValueError, match=rf"2:4 indices row {row}, group {group}: positions "
                                         rf"\(2, 1\) must be strictly increasing"):
        if product == "input gradient":
            torch.ops.sparsekern._spmm_transposed_cpu(A.values, meta, A.offsets, M, K, "2:4",
                                                      torch.randn(M, N))
        else:
            torch.ops.sparsekern._sampled_dot_cpu(A.values, meta, A.offsets, M, K, "2:4",
                                                  torch.randn(M, N), torch.randn(K, N))


def _values_gradient_case(M, K, N, dtype, G_layout, B_layout, threads, g, G=None):
    """One 2:4 values' gradient ((G @ B.T) at the stored entries) through the CPU op against
    the float64 reference."""
    A = pack(make_weight(M, K, "2:4", None, density=0.5, dtype=dtype,
                         seed=int(torch.randint(1 << 30, (1,), generator=g))), "2:4", None)
    S = 2 * max(M, N, K) + 1
    base = torch.randn(S, S, generator=g)
    if G is None:
        G = {"row-major": base[:M, :N].contiguous(),
             "column-major": base[:N, :M].contiguous().t(),  # a Linear's dY.T
             "sliced": base[::2, ::2][:M, :N]}[G_layout]
    other = torch.randn(S, S, generator=g)
    B = {"row-major": other[:K, :N].contiguous(),
         "column-major": other[:N, :K].contiguous().t(),     # a Linear's x.T
         "sliced": other[::2, ::2][:K, :N]}[B_layout]
    torch.set_num_threads(threads)
    got = torch.ops.sparsekern._sampled_dot_cpu(A.values, A.indices, A.offsets, M, K, "2:4", G, B)
    want = reference.sampled_dot(A.values.double(), A.indices, A.offsets, M, K, "2:4",
                                 G.double(), B.double())
    assert got.shape == A.values.shape and got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    fin = torch.isfinite(want)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got.double()[fin], want[fin], rtol=tol, atol=tol * N ** 0.5 / 8,
                               msg=lambda m: f"{M}x{K} N={N} {dtype} {G_layout} {B_layout} "
                                             f"{threads}t: {m}")
    return got


def test_semi24_values_gradient_sorted_kernel():
    """The 2:4 values' gradient from 512 to 8192 columns (AVX-512: G rows in row blocks that
    fit L2, each group's rows in lists by position pair, tiles of up to 8 rows): rows in
    several blocks (1100 rows at 600 columns: 218-row blocks; 2000 at 2048: 64-row blocks),
    lists of 1-8 rows and longer, K in a partial last group, N with a partial last vector,
    the weight dtypes, G and B row-major / column-major / sliced, one and two threads. Fresh
    random inputs each run."""
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, (1,))))
    cases = [(1100, 70, 600), (37, 4, 512), (600, 257, 513), (2000, 12, 2048), (9, 130, 8192),
             (3, 30, 1000), (1100, 70, 600)]
    layouts = ["row-major", "column-major", "sliced"]
    for i, ((M, K, N), dtype) in enumerate(zip(cases * 3, WEIGHT_DTYPES * 7)):
        _values_gradient_case(M, K, N, dtype, layouts[i % 3], layouts[(i // 3) % 3],
                              1 + i % 2, g)


def test_semi24_values_gradient_same_bits_at_any_thread_count():
    """Each output element is summed by one thread in a fixed order."""
    got = [_values_gradient_case(1100, 200, 600, torch.float32, "column-major", "column-major",
                                 t, torch.Generator().manual_seed(3)) for t in (1, 2)]
    assert torch.equal(got[0], got[1])


def test_semi24_values_gradient_non_finite_G_and_the_padding():
    """An Inf or NaN of G reaches only its row's entries, as in the reference; entries in the
    last group's padding (K % 4 != 0) are 0 whatever G and B hold."""
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, (1,))))
    M, K, N = 40, 30, 600
    G = torch.randn(M, N, generator=g)
    G[5, 7] = float("inf")
    G[9, 599] = float("nan")
    got = _values_gradient_case(M, K, N, torch.float32, "row-major", "column-major", 2, g, G)
    assert not torch.isfinite(got[5]).any() and torch.isnan(got[9]).all()
    assert torch.isfinite(got[[0, 1, 39]]).all()
    A = pack(make_weight(M, K, "2:4", None, density=0.5, seed=1), "2:4", None)
    meta = A.indices.clone()
    last = (K + 3) // 4 - 1  # group 7: columns 28..31, of which 30 and 31 are padding
    byte, shift = last // 2, 4 * (last % 2)
    meta[:, byte] = (meta[:, byte] & ~(0xF << shift)) | ((1 | 3 << 2) << shift)  # positions 1, 3
    B = torch.randn(K, N, generator=g)
    B[K - 1] = float("inf")  # column 29: a stored entry reads it; the padding entry stays 0
    got = torch.ops.sparsekern._sampled_dot_cpu(A.values, meta, A.offsets, M, K, "2:4",
                                                torch.randn(M, N, generator=g), B)
    assert torch.equal(got[:, 2 * last + 1], torch.zeros(M))


def test_semi24_backward_workspaces_reused_across_shapes():
    """The 2:4 backward products at N >= 32 run through per-thread scratch matrices kept
    between calls: growing, shrinking and interleaved shapes must each give the reference's
    answer, and a returned result must not change when the next call reuses the scratch."""
    g = torch.Generator().manual_seed(5)
    kept = []
    for M, K, N in [(64, 128, 32), (8, 16, 40), (96, 200, 33), (8, 16, 40), (64, 128, 64)]:
        A = pack(make_weight(M, K, "2:4", None, density=0.5, seed=M + K), "2:4", None)
        G, B = torch.randn(M, N, generator=g), torch.randn(K, N, generator=g)
        fmt = (A.values, A.indices, A.offsets, M, K, "2:4")
        t = torch.ops.sparsekern._spmm_transposed_cpu(*fmt, G)
        d = torch.ops.sparsekern._sampled_dot_cpu(*fmt, G, B)
        Wd = A.to_dense()
        torch.testing.assert_close(t, Wd.t() @ G, rtol=1e-4, atol=1e-4)
        want_d = reference.sampled_dot(A.values.double(), A.indices, A.offsets, M, K, "2:4",
                                       G.double(), B.double())
        torch.testing.assert_close(d.double(), want_d, rtol=1e-4, atol=1e-4)
        kept.append((t, t.clone(), d, d.clone()))
    for t, t0, d, d0 in kept:
        assert torch.equal(t, t0) and torch.equal(d, d0)


def test_csc_zero_activations_are_skipped_exactly():
    """GEMV skips columns whose activation is 0 (EIE), except where Inf * 0 must give NaN."""
    W = make_weight(50, 64, "csc", None, density=0.5)
    A = sk.to_sparse(W, layout="csc")
    x = torch.randn(64, 1)
    x[::2] = 0.0  # ReLU-like: half the activations are zero
    check_call(A, x, torch.randn(50))
    W2 = W.clone()
    r, c = W2.nonzero()[0].tolist()
    W2[r, c] = float("inf")
    A2 = sk.to_sparse(W2, layout="csc")
    x2 = torch.randn(64, 1)
    x2[c] = 0.0
    out = torch.ops.sparsekern.spmm(*A2.op_args(), x2)
    assert torch.isnan(out[r, 0]), "a stored Inf times a zero activation must give NaN"


@pytest.mark.parametrize("zero_fraction", [0.0, 0.5, 0.9, 1.0])
def test_csc_gemv_column_walk_and_row_gather(zero_fraction):
    """N == 1 walks the active columns (scatter) or gathers through the row-wise repack,
    depending on how many activations are zero: both give the reference answer."""
    W = make_weight(300, 400, "csc", None, density=0.2)
    A = sk.to_sparse(W, layout="csc")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(400, 1, generator=g)
    x[torch.rand(400, generator=g) < zero_fraction] = 0.0
    for B in (x, torch.randn(400, 3, generator=g)[:, 1:2] * (x != 0)):
        check_call(A, B, torch.randn(300))


def test_csc_index_dtypes():
    """int16 / int32 row indices and int32 / int64 column pointers give one answer."""
    W = make_weight(70, 90, "csc", None, density=0.3)
    A = sk.to_sparse(W, layout="csc")
    assert A.indices.dtype == torch.int16 and A.offsets.dtype == torch.int32
    for rows in (A.indices, A.indices.int()):
        for offs in (A.offsets, A.offsets.long()):
            B16 = sk.formats.from_parts("csc", A.values, rows, offs, A.shape)
            for N in (1, 6, 20):
                check_call(B16, torch.randn(90, N), None)


def test_csc_int32_rows_for_tall_matrices():
    M, K = 33000, 6
    W = torch.zeros(M, K)
    idx = torch.randint(0, M, (400,))
    W[idx, torch.randint(0, K, (400,))] = torch.randn(400)
    W[M - 1, K - 1] = 1.5
    A = sk.to_sparse(W, layout="csc")
    assert A.indices.dtype == torch.int32
    for N in (1, 3):
        check_call(A, torch.randn(K, N), torch.randn(M))


def test_semi24_unused_high_nibble_is_ignored():
    """With an odd group count the last metadata byte's high nibble is padding (any bits)."""
    W = make_weight(6, 12, "2:4", None)  # 3 groups -> 2 bytes, high nibble of byte 1 unused
    A = sk.to_sparse(W, layout="2:4")
    meta = A.indices.clone()
    meta[:, 1] &= 0x0F  # (0, 0) in the unused nibble: invalid if it were a group
    A2 = sk.formats.from_parts("2:4", A.values, meta, A.offsets, A.shape, validate=False)
    for N in (1, 8):
        torch.testing.assert_close(torch.ops.sparsekern.spmm(*A2.op_args(), torch.ones(12, N)),
                                   torch.ops.sparsekern.spmm(*A.op_args(), torch.ones(12, N)))


def test_bsr_padding_never_contributes():
    """Stored padding past M and K (hand-made, non-zero) is ignored like the reference does."""
    W = make_weight(10, 10, "bsr", (4, 4), density=1.0)
    A = sk.to_sparse(W, layout="bsr", blocksize=(4, 4))
    vals = A.values.clone()
    vals[-1, 2:, :] = float("nan")  # rows 10, 11 of the last block row
    last_col = (A.indices == 2)
    vals[last_col, :, 2:] = float("nan")  # columns 10, 11
    A2 = sk.formats.from_parts("bsr", vals, A.indices, A.offsets, A.shape, validate=False)
    for N in (1, 5):
        out = check_call(A2, torch.randn(10, N), None)
        assert torch.isfinite(out).all()


def test_bias_strided():
    W = make_weight(30, 20, "csc", None)
    A = sk.to_sparse(W, layout="csc")
    bias = torch.randn(60)[::2]
    for N in (1, 4):
        check_call(A, torch.randn(20, N), bias)


@pytest.mark.parametrize("case", LAYOUTS, ids=layout_id)
def test_linear_path(case):
    """sk.linear (B = x.T, column-major) on a 3-D activation, as nn layers call it."""
    layout, block = case
    W = make_weight(48, 40, layout, block)
    A = pack(W, layout, block)
    x = torch.randn(2, 5, 40)
    bias = torch.randn(48)
    y = sk.linear(x, A, bias)
    ref = x.double() @ W.double().t() + bias.double()
    assert rel_err(y, ref) < 1e-5
    y1 = sk.linear(x[0, 0], A, bias)
    assert rel_err(y1, ref[0, 0]) < 1e-5
