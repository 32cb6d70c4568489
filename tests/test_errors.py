"""Every documented rejection raises a clear error naming the argument (DESIGN.md, "The op")."""
import pytest
import torch

import sparsekern as sk
from tests.helpers import random_pattern_weight

spmm = torch.ops.sparsekern.spmm


def _redraw(draw, at_least=2):
    """A fresh random operand with at least ``at_least`` stored entries (blocks for BSR).

    The rejection tests corrupt the first stored entries; a draw with none (6 BSR blocks at
    density 0.6 come out empty once in 250) would make them fail on the fixture, not the op.
    """
    while True:
        A = draw()
        if A.values.shape[0] >= at_least:
            return A


def csc(M=6, K=8):
    return _redraw(lambda: sk.to_sparse(random_pattern_weight(M, K, "csc", density=0.5),
                                        layout="csc"))


def bsr(M=6, K=8):
    return _redraw(lambda: sk.to_sparse(
        random_pattern_weight(M, K, "bsr", density=0.6, blocksize=(2, 4)),
        layout="bsr", blocksize=(2, 4)))


def semi(M=6, K=8):
    return sk.to_sparse(random_pattern_weight(M, K, "2:4"), layout="2:4")


ALL = [csc, bsr, semi]


@pytest.mark.parametrize("make", ALL)
def test_mismatched_K(make):
    A = make()
    with pytest.raises(ValueError, match=r"B has shape \[7, 3\] but A needs K=8 rows"):
        sk.spmm(A, torch.randn(7, 3))
    with pytest.raises(ValueError, match=r"B has shape \[7, 3\] but A needs K=8 rows"):
        spmm(*A.op_args(), torch.randn(7, 3))
    with pytest.raises(ValueError, match=r"x has shape \[2, 5\]; expected \[..., K\] with K=8"):
        sk.linear(torch.randn(2, 5), A)


@pytest.mark.parametrize("make", ALL)
def test_wrong_number_of_dimensions(make):
    A = make()
    with pytest.raises(ValueError, match=r"B must be of shape \[K, N\] or \[K\] with K=8, got "
                                         r"shape \[8, 2, 2\] \(3-D\)"):
        sk.spmm(A, torch.randn(8, 2, 2))
    with pytest.raises(ValueError, match=r"B must be 2-D of shape \[K, N\], got shape \[8\]"):
        spmm(*A.op_args(), torch.randn(8))


@pytest.mark.parametrize("make", ALL)
def test_dtype_mismatch(make):
    A = make()
    with pytest.raises(TypeError, match=r"B has dtype torch.float64 but the sparse values have "
                                        r"dtype torch.float32"):
        sk.spmm(A, torch.randn(8, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"bias has dtype torch.float64; expected the output "
                                        r"dtype torch.float32"):
        sk.spmm(A, torch.randn(8, 2), torch.randn(6, dtype=torch.float64))



@pytest.mark.parametrize("make", ALL)
def test_a_layers_input_of_the_wrong_dtype_or_device_is_named_x(make):
    """SparseLinear / sk.linear / SparseConv2d name their input x (the op's B is x.T, an
    internal name a layer's caller never sees)."""
    A = make()
    lin = sk.SparseLinear(A)
    conv = sk.SparseConv2d(sk.to_sparse(random_pattern_weight(6, 8, "csc", density=0.5),
                                        layout="csc"), in_channels=2, kernel_size=2)
    cases = [(lin, torch.randn(3, 8, dtype=torch.float64)),
             (lin, torch.randn(2, 3, 8).bfloat16()),
             (lambda x: sk.linear(x, A), torch.randn(3, 8, dtype=torch.float64)),
             (conv, torch.randn(1, 2, 3, 3, dtype=torch.float64))]
    for f, x in cases:
        with pytest.raises(TypeError, match=rf"x has dtype {x.dtype} but the layer's weight "
                                            rf"has dtype torch.float32; expected the same dtype "
                                            rf"\(convert the input or the model"):
            f(x)
    for f, x in [(lin, torch.ones(3, 8, dtype=torch.int64)),
                 (conv, torch.ones(1, 2, 3, 3, dtype=torch.int64))]:
        with pytest.raises(TypeError, match=r"x has dtype torch.int64; expected a floating "
                                            r"dtype"):
            f(x)
    for f, x in [(lin, torch.empty(3, 8, device="meta")),
                 (conv, torch.empty(1, 2, 3, 3, device="meta"))]:
        with pytest.raises(ValueError, match=r"x is on meta but the layer's weight is on cpu; "
                                             r"expected one device"):
            f(x)
    lin16 = sk.SparseLinear(sk.to_sparse(A.to_dense().bfloat16(), layout=A.layout,
                                         **({"blocksize": (2, 4)} if A.layout == "bsr" else {})))
    x = torch.randn(3, 8)  # float32 input, bfloat16 weight: weight-only compression
    assert torch.allclose(lin16(x), x @ A.to_dense().bfloat16().float().T, atol=1e-5)

@pytest.mark.parametrize("make", ALL)
def test_device_mismatch(make):
    A = make()
    with pytest.raises(ValueError, match=r"B is on meta but the sparse values are on cpu"):
        spmm(*A.op_args(), torch.empty(8, 2, device="meta"))
    with pytest.raises(ValueError, match=r"indices is on meta but values is on cpu"):
        spmm(A.values, A.indices.to("meta"), A.offsets, 6, 8, A.layout, torch.randn(8, 2))


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.complex64, torch.bool])
def test_unsupported_dtype_of_B(make, dtype):
    A = make()
    B = torch.ones(8, 2).to(dtype)
    with pytest.raises(TypeError, match=rf"B has unsupported dtype {dtype}; expected a floating"):
        sk.spmm(A, B)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64])
def test_unsupported_dtype_of_weight(dtype):
    with pytest.raises(TypeError, match=rf"W has dtype {dtype}; expected one of float32"):
        sk.to_sparse(torch.ones(4, 4).to(dtype), layout="csc")
    A = csc()
    with pytest.raises(TypeError, match=rf"values has dtype {dtype}; expected one of float32"):
        spmm(A.values.to(dtype), A.indices, A.offsets, 6, 8, "csc", torch.randn(8, 2))


def test_bad_bias_shape():
    A = csc()
    with pytest.raises(ValueError, match=r"bias has shape \[5\]; expected \[M\] = \[6\]"):
        sk.spmm(A, torch.randn(8, 2), torch.randn(5))


def test_semi24_pack_names_first_offending_row_and_group():
    W = torch.zeros(4, 12)
    W[2, 4:7] = 1.0  # row 2, group 1 has 3 nonzeros
    W[3, 0:4] = 1.0
    with pytest.raises(ValueError, match=r"row 2, group 1 \(columns 4..7\) has 3 nonzeros"):
        sk.to_sparse(W, layout="2:4")


@pytest.mark.parametrize("blocksize", [(0, 4), (4, -1), (2,), "ab", (1.5, 2), None.__class__])
def test_bsr_blocksize_not_positive(blocksize):
    with pytest.raises(ValueError, match=r"blocksize must be two positive integers"):
        sk.to_sparse(torch.ones(4, 4), layout="bsr", blocksize=blocksize)


def test_blocksize_given_for_other_layout():
    with pytest.raises(ValueError, match=r"blocksize is only for layout='bsr'"):
        sk.to_sparse(torch.ones(4, 4), layout="csc", blocksize=(2, 2))


def test_unknown_layout():
    with pytest.raises(ValueError, match=r"layout must be one of '1:4', '2:4', 'bsr', 'csc', 'sell'; got 'coo'"):
        sk.to_sparse(torch.ones(4, 4), layout="coo")
    A = csc()
    with pytest.raises(ValueError, match=r"layout must be one of"):
        spmm(A.values, A.indices, A.offsets, 6, 8, "coo", torch.randn(8, 2))


def test_weight_must_be_2d():
    with pytest.raises(ValueError, match=r"W must be 2-D of shape \[M, K\], got shape \[4\]"):
        sk.to_sparse(torch.ones(4), layout="csc")
    with pytest.raises(TypeError, match=r"W must be a torch.Tensor"):
        sk.to_sparse([[1.0]], layout="csc")


def test_spmm_needs_a_format():
    with pytest.raises(TypeError, match=r"A must be a packed sparse matrix from "
                                        r"sparsekern.to_sparse \(layout one of '1:4', '2:4', "
                                        r"'bsr', 'csc', 'sell'\), got Tensor"):
        sk.spmm(torch.ones(2, 2), torch.ones(2, 2))


# -- hand-made format tensors: rejected when a format is built and by the raw op ----------------

def _both(make_args, match, exc=ValueError):
    """The format constructor and the raw op (every backend) both reject the tensors."""
    layout, values, indices, offsets, M, K = make_args()
    with pytest.raises(exc, match=match):
        sk.formats.from_parts(layout, values, indices, offsets, (M, K))
    B = torch.randn(K, 3)
    for backend in (None, "reference"):
        with pytest.raises((ValueError, RuntimeError), match=r"out of range|offsets|positions"):
            if backend is None:
                spmm(values, indices, offsets, M, K, layout, B)
            else:
                with sk.use_backend(backend):
                    spmm(values, indices, offsets, M, K, layout, B)


def test_csc_row_index_out_of_range():
    def args():
        A = csc()
        idx = A.indices.clone()
        idx[1] = 6  # M = 6
        return "csc", A.values, idx, A.offsets, 6, 8
    _both(args, r"csc row indices\[1\]=6 is out of range; expected 0 <= index < 6")


def test_csc_negative_row_index():
    def args():
        A = csc()
        idx = A.indices.clone()
        idx[0] = -1
        return "csc", A.values, idx, A.offsets, 6, 8
    _both(args, r"csc row indices\[0\]=-1 is out of range")


def test_csc_offsets_not_monotone():
    def args():
        A = csc()
        off = A.offsets.clone()
        off[1] = off[-1]
        off[2] = 0
        return "csc", A.values, A.indices, off, 6, 8
    _both(args, r"csc offsets must not decrease: offsets\[2\]=0 < offsets\[1\]")


def test_csc_offsets_past_the_end():
    def args():
        A = csc()
        off = A.offsets.clone()
        off[-1] += 5
        return "csc", A.values, A.indices, off, 6, 8
    _both(args, r"csc offsets must end at the number of stored entries")


def test_bsr_block_column_out_of_range():
    def args():
        A = bsr()
        idx = A.indices.clone()
        idx[0] = 2  # K=8, bk=4: block columns 0..1
        return "bsr", A.values, idx, A.offsets, 6, 8
    _both(args, r"bsr block-column indices\[0\]=2 is out of range; expected 0 <= index < 2")


def test_bsr_offsets_not_monotone():
    def args():
        A = bsr()
        nnzb = A.values.shape[0]
        off = torch.tensor([0, nnzb, 0, nnzb], dtype=torch.int32)
        return "bsr", A.values, A.indices, off, 6, 8
    _both(args, r"bsr offsets must not decrease")


def test_semi24_positions_not_increasing():
    def args():
        A = semi()
        meta = A.indices.clone()
        meta[1, 0] = 0x11  # positions (1, 0) in both groups of byte 0 of row 1
        return "2:4", A.values, meta, A.offsets, 6, 8
    _both(args, r"2:4 indices row 1, group 0: positions \(1, 0\) must be strictly increasing")


@pytest.mark.parametrize("layout,make,bad,match", [
    ("csc", csc, "values", r"csc values has shape \[2, 2\]; expected \[nnz\]"),
    ("csc", csc, "offsets", r"csc offsets has shape \[3\] and dtype torch.int32; expected int32 or "
                            r"int64 of shape \[K \+ 1\] = \[9\]"),
    # one more block index than stored blocks: never a valid length (a random pattern may
    # store exactly one block, so a fixed length of 1 was sometimes valid)
    ("bsr", bsr, "indices", r"bsr values has shape \[\d+, 2, 4\] but indices has shape "
                            r"\[{nnzb_plus_1}\]"),
    ("2:4", semi, "values", r"2:4 values has shape \[6, 3\]; expected \[M, ceil\(K/4\)\*2\] = "
                            r"\[6, 4\]"),
    ("2:4", semi, "indices", r"2:4 indices has dtype torch.int32; expected torch.uint8"),
])
def test_format_tensor_shapes(layout, make, bad, match):
    A = make()
    t = {"values": A.values, "indices": A.indices, "offsets": A.offsets}
    if bad == "values":
        t["values"] = torch.randn(2, 2) if layout == "csc" else torch.randn(6, 3)
    elif bad == "offsets":
        t["offsets"] = torch.zeros(3, dtype=torch.int32)
    elif bad == "indices":
        t["indices"] = (torch.zeros(A.indices.numel() + 1, dtype=torch.int32)
                        if layout == "bsr" else A.indices.to(torch.int32))
        match = match.replace("{nnzb_plus_1}", str(A.indices.numel() + 1))
    with pytest.raises((ValueError, TypeError), match=match):
        spmm(t["values"], t["indices"], t["offsets"], 6, 8, layout, torch.randn(8, 2))


@pytest.mark.parametrize("layout,make,units", [("csc", csc, ("values", "row indices")),
                                               ("bsr", bsr, ("blocks", "block-column indices"))])
@pytest.mark.parametrize("short", ["values", "indices"])
def test_values_and_indices_of_different_lengths_are_both_named(layout, make, units, short):
    """A values tensor 1 entry short was reported as 'csc indices has shape [n + 1] ...;
    expected ... [nnz] = [n]' (nnz read from values): the message names both tensors, their
    lengths and what offsets[-1] says, so the short one shows."""
    A = make()
    n = A.values.shape[0]
    t = {"values": A.values, "indices": A.indices}
    t[short] = t[short][:-1]
    nv, ni = (n - 1, n) if short == "values" else (n, n - 1)
    shape_v = r"\[" + ", ".join(str(d) for d in t["values"].shape) + r"\]"
    match = (rf"{layout} values has shape {shape_v} but indices has shape \[{ni}\]: {nv} "
             rf"{units[0]}, {ni} {units[1]}; offsets\[-1\] = {n}; expected as many {units[1]} "
             rf"as {units[0]}, the number stored \(offsets\[-1\]\)")
    args = (t["values"], t["indices"], A.offsets, 6, 8, layout)
    with pytest.raises(ValueError, match=match):
        sk.formats.from_parts(layout, *args[:3], (6, 8))
    with pytest.raises(ValueError, match=match):
        spmm(*args, torch.randn(8, 3))
    with sk.use_backend("reference"), pytest.raises(ValueError, match=match):
        spmm(*args, torch.randn(8, 3))
    with pytest.raises(ValueError, match=rf"{layout} values has shape {shape_v} but indices has "
                                         rf"shape \[{ni}\]: {nv} {units[0]}, {ni} {units[1]}; "
                                         rf"expected"):  # offsets that cannot say are left out
        spmm(*args[:2], A.offsets.float(), 6, 8, layout, torch.randn(8, 3))


def test_no_input_crashes_the_process_on_random_garbage():
    # Random index tensors of the right shapes: every call either raises or returns finite data.
    g = torch.Generator().manual_seed(0)
    A = csc(10, 12)
    for _ in range(50):
        idx = torch.randint(-3, 14, A.indices.shape, generator=g, dtype=torch.int32).to(torch.int16)
        off = torch.randint(-2, A.nnz + 3, A.offsets.shape, generator=g, dtype=torch.int32)
        try:
            out = spmm(A.values, idx, off, 10, 12, "csc", torch.randn(12, 2))
        except (ValueError, RuntimeError):
            continue
        assert bool(torch.isfinite(out).all())


def test_torch_sparse_operands_get_the_named_error():
    """A torch.sparse B or x went to a sparse dispatch key with no kernel: torch's "Could not
    run 'sparsekern::spmm' with arguments from the 'SparseCPU' backend" named nothing."""
    import sparsekern as sk
    W = torch.randn(8, 16)
    W[torch.rand_like(W) < 0.7] = 0
    A = sk.to_sparse(W, "csc")
    for to_sparse in (lambda t: t.to_sparse(), lambda t: t.to_sparse_csr()):
        with pytest.raises(TypeError, match=r"B must be a dense \(strided\) tensor, got layout "
                                            r"torch.sparse_c"):
            sk.spmm(A, to_sparse(torch.randn(16, 4)))
        with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor"):
            sk.linear(to_sparse(torch.randn(4, 16)), A)
        with pytest.raises(TypeError, match=r"dense \(strided\) tensor, got layout"):
            sk.SparseLinear(A)(to_sparse(torch.randn(4, 16)))
    G = torch.randn(8, 4).to_sparse()
    with pytest.raises(TypeError, match=r"G must be a dense \(strided\) tensor"):
        torch.ops.sparsekern.spmm_transposed(A.values, A.indices, A.offsets, 8, 16, "csc", G)


@pytest.mark.parametrize("blocksize,match", [
    ((2**31, 1), r"blocksize=\(2147483648, 1\) makes blocks of 2147483648 elements; at most "
                 r"16777216 \(2\^24\) per block are served"),
    (("4", 4), r"blocksize must be two positive integers \(bm, bk\), got \('4', 4\)"),
    ((True, True), r"blocksize must be two positive integers"),
    ((float("inf"), 2), r"blocksize must be two positive integers"),
    ((4, 4, 4), r"blocksize must be two positive integers"),
    ((2.5, 4), r"blocksize must be two positive integers"),
])
def test_bad_blocksize_is_named_before_anything_is_allocated(blocksize, match):
    with pytest.raises(ValueError, match=match):
        sk.to_sparse(torch.randn(6, 10), layout="bsr", blocksize=blocksize)


@pytest.mark.parametrize("shape", [(6.7, 10), ("6", "10"), (True, 10), (6,), (6, 10, 1), (-1, 10)])
def test_bad_shape_is_named(shape):
    A = csc()
    with pytest.raises(ValueError, match=r"shape must be \(M, K\), two non-negative integers, "
                                         r"got "):
        sk.formats.from_parts("csc", A.values, A.indices, A.offsets, shape)


def test_format_to_an_integer_dtype_is_refused():
    with pytest.raises(TypeError, match=r"CSC.to\(\) would give values of dtype torch.int32; "
                                        r"expected one of float32"):
        csc().to(torch.int32)
    assert csc().to(torch.float64).dtype == torch.float64


@pytest.mark.parametrize("draw", ALL)
def test_other_tensor_kinds_get_the_named_error(draw):
    """A sparse bias, an MKL-DNN or quantized operand and nested tensors (strided or jagged)
    were answered by torch ("Could not run 'sparsekern::spmm' with arguments from the
    'QuantizedCPU' backend", "NestedTensorImpl doesn't support sizes", a bare
    NotImplementedError, or "sparsekern takes dense tensors" naming no argument for a bias)."""
    A = draw()
    M, K = A.shape
    B, bias = torch.randn(K, 3), torch.randn(M)
    with sk.use_backend("reference"):
        want = spmm(*A.op_args(), B, bias)
    torch.testing.assert_close(spmm(*A.op_args(), B, bias), want)  # the valid call, unchanged
    nested = torch.nested.nested_tensor([torch.randn(2), torch.randn(3)])
    q = lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)  # noqa: E731
    bad = [
        (dict(bias=bias.to_sparse()), TypeError,
         r"bias must be a dense \(strided\) tensor, got layout torch.sparse_coo"),
        (dict(bias=nested), TypeError, r"bias must be a dense \(strided\) tensor, got a nested"),
        (dict(B=B.to_mkldnn()), TypeError,
         r"B must be a dense \(strided\) tensor, got layout torch._mkldnn"),
        (dict(B=q(B)), TypeError, r"B has unsupported dtype torch.qint8; expected a floating"),
        (dict(values=q(A.values.float())), TypeError, r"values has dtype torch.qint8; expected"),
        (dict(B=torch.nested.nested_tensor([B])), TypeError,
         r"B must be a dense \(strided\) tensor, got a nested tensor"),
        (dict(values=nested), TypeError, r"values must be a dense \(strided\) tensor, got a nested"),
        (dict(offsets=nested), TypeError, r"offsets must be a dense \(strided\) tensor, got a nest"),
    ]
    for change, err, match in bad:
        args = dict(values=A.values, indices=A.indices, offsets=A.offsets, B=B, bias=bias)
        args.update(change)
        call = (args["values"], args["indices"], args["offsets"], M, K, A.layout, args["B"],
                args["bias"])
        with pytest.raises(err, match=match):
            spmm(*call)
        with sk.use_backend("reference"), pytest.raises(err, match=match):
            spmm(*call)
    G = torch.nested.nested_tensor([torch.randn(M, 2)])
    with pytest.raises(TypeError, match=r"G must be a dense \(strided\) tensor, got a nested"):
        torch.ops.sparsekern.spmm_transposed(*A.op_args(), G)
    layer = sk.SparseLinear(A)
    for layout in (torch.strided, torch.jagged):
        x = torch.nested.nested_tensor([torch.randn(2, K), torch.randn(3, K)], layout=layout)
        for f in (lambda: sk.linear(x, A), lambda: layer(x)):
            with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor, got a "
                                                r"nested tensor \(layout torch\.(strided|jagged)"):
                f()
        with pytest.raises(TypeError, match=r"B must be a dense \(strided\) tensor, got a nested"):
            sk.spmm(A, x.transpose(1, 2) if layout == torch.strided else x)


@pytest.mark.parametrize("draw", ALL)
def test_autocast_dtype_errors_name_the_callers_dtypes(draw):
    """Under torch.autocast the op cast float32 operands to the autocast dtype but left
    float64 ones alone, so float32 values with a float64 B were rejected as "the sparse values
    have dtype torch.bfloat16", a dtype the caller never passed."""
    A = draw()
    M, K = A.shape
    B = torch.randn(K, 3)
    v, i, o = A.values.float(), A.indices, A.offsets
    cases = [((v, B.double()), r"B has dtype torch.float64 but the sparse values have dtype "
                               r"torch.float32"),
             ((v.double(), B), r"B has dtype torch.float32 but the sparse values have dtype "
                               r"torch.float64")]
    for (values, b), match in cases:
        with sk.use_backend("reference"), pytest.raises(TypeError, match=match):
            spmm(values, i, o, M, K, A.layout, b)
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match=match):
            spmm(values, i, o, M, K, A.layout, b)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(
            TypeError, match=r"bias has dtype torch.float64; expected the output dtype "
                             r"torch.float32"):
        spmm(v, i, o, M, K, A.layout, B, torch.randn(M, dtype=torch.float64))
    # the calls autocast serves are unchanged: bfloat16 compute, float64 left alone
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = spmm(v, i, o, M, K, A.layout, B)
        y64 = spmm(v.double(), i, o, M, K, A.layout, B.double())
    with sk.use_backend("reference"):
        want = spmm(v.bfloat16(), i, o, M, K, A.layout, B.bfloat16())
        want64 = spmm(v.double(), i, o, M, K, A.layout, B.double())
    assert y.dtype == torch.bfloat16 and y64.dtype == torch.float64
    torch.testing.assert_close(y, want, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y64, want64)


@pytest.mark.parametrize("make", ALL)
def test_to_dense_checks_indices_changed_after_construction(make):
    """A negative index written into a built format wrapped around silently in to_dense."""
    A = make()
    if A.layout == "2:4":
        A.indices[0, 0] = 0x11  # positions (1, 0): not increasing
        match = r"2:4 indices row 0, group 0"
    else:
        A.indices[0] = -1
        match = r"out of range"
    with pytest.raises(ValueError, match=match):
        A.to_dense()


def test_sparse_linear_names_x_for_a_sparse_input():
    """The layer's fast path used to hand a sparse COO x to the op, whose message named B."""
    W = torch.randn(16, 8)
    W[torch.rand_like(W) < 0.8] = 0
    lin = torch.nn.Linear(8, 16)
    with torch.no_grad():
        lin.weight.copy_(W)
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    with pytest.raises(TypeError, match=r"^x must be a dense \(strided\) tensor, got layout "
                                         r"torch.sparse_coo"):
        layer(torch.randn(4, 8).to_sparse())


# ----------------------------------------------------------------------------- trial 2026-12-05

@pytest.mark.parametrize("bad", ["0.3", [0.3], torch.tensor([0.3, 0.4]), True])
def test_sparsify_max_density_of_another_type_is_named(bad):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with pytest.raises(TypeError, match=r"max_density must be a number in \[0, 1\].*got "):
        sk.sparsify(model, layout="csc", max_density=bad)


@pytest.mark.parametrize("in_channels,exc", [(4.5, TypeError), ("4", TypeError),
                                             (True, TypeError), (0, ValueError),
                                             (-2, ValueError)])
def test_sparse_conv2d_in_channels_must_be_a_positive_int(in_channels, exc):
    W = sk.to_sparse(torch.zeros(4, 16), layout="csc")
    with pytest.raises(exc, match=r"in_channels must be a positive int, got "):
        sk.SparseConv2d(W, in_channels, kernel_size=2)


@pytest.mark.parametrize("bias,exc,msg", [
    (torch.zeros(4, dtype=torch.long), TypeError, r"bias has dtype torch.int64; expected a float"),
    ([0.0] * 4, TypeError, r"bias must be a torch.Tensor of shape \[4\] or None, got list"),
    (torch.zeros(4, device="meta"), ValueError, r"bias is on meta but the weight is on cpu"),
    (torch.zeros(5), ValueError, r"bias has shape \[5\]; expected \[4\]")])
@pytest.mark.parametrize("cls", ["SparseLinear", "SparseConv2d"])
def test_packed_layer_bias_errors_are_the_same(cls, bias, exc, msg):
    W = sk.to_sparse(torch.zeros(4, 16), layout="csc")
    with pytest.raises(exc, match=msg):
        if cls == "SparseLinear":
            sk.SparseLinear(W, bias=bias)
        else:
            sk.SparseConv2d(W, 4, kernel_size=2, bias=bias)


def test_to_sparse_of_a_meta_tensor_names_W():
    with pytest.raises(ValueError, match=r"W is on the meta device .*materialize it first"):
        sk.to_sparse(torch.zeros(8, 8, device="meta"), layout="csc")


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_float64_input_under_autocast_is_named_x(kind):
    """autocast never casts float64, so the op would have named its internal operand B."""
    if kind == "linear":
        layer = sk.SparseLinear.from_dense(torch.nn.Linear(8, 4), layout="csc")
        x = torch.randn(3, 8, dtype=torch.float64)
    else:
        conv = torch.nn.Conv2d(4, 8, 3)
        with torch.no_grad():
            conv.weight.mul_(torch.rand_like(conv.weight) < 0.2)
        layer = sk.SparseConv2d.from_dense(conv, layout="csc")
        x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(TypeError, match=r"^x has dtype torch.float64 but the layer's weight "
                                            r"has dtype torch.float32"):
            layer(x)


def test_jit_trace_runs_at_other_sizes_of_its_rank():
    import warnings
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 32)
    with torch.no_grad():
        lin.weight.mul_(torch.arange(16) % 2 == 0)
    layer = sk.SparseLinear.from_dense(lin, layout="2:4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t3 = torch.jit.trace(layer, torch.randn(2, 7, 16))
        t2 = torch.jit.trace(layer, torch.randn(4, 16))
    for traced, x in ((t3, torch.randn(3, 5, 16)), (t3, torch.randn(1, 1, 16)),
                      (t2, torch.randn(9, 16)), (t2, torch.randn(1, 16))):
        torch.testing.assert_close(traced(x), lin(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- trial 2 (2026-12-05)

@pytest.mark.parametrize("fn", ["fine_tune", "train"])
def test_training_on_an_empty_or_exhausted_loader_raises(fn):
    """A mean loss of nothing was reported as 0.0, which reads as a perfect fit."""
    from sparsekern import prune
    from sparsekern.prune import trainer
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    run = (lambda loader, epochs: prune.fine_tune(model, loader, epochs=epochs,
                                                  progress=False)) if fn == "fine_tune" else \
        (lambda loader, epochs: trainer.train(model, loader, epochs=epochs, progress=False))
    with pytest.raises(ValueError, match=r"loader is empty: give at least one"):
        run([], 1)
    gen = ((torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(1))
    with pytest.raises(ValueError, match=r"loader ran out after epoch 1: a one-shot iterator"):
        run(gen, 3)
    assert len(run([(torch.randn(2, 4), torch.tensor([0, 2]))], 2)) == 2


def test_save_sparse_to_a_folder_names_path(tmp_path):
    model = sk.sparsify(torch.nn.Sequential(torch.nn.Linear(8, 4)), layout="csc",
                        max_density=1.0)
    for p in (tmp_path, str(tmp_path / "m.safetensors") + "/"):
        with pytest.raises(IsADirectoryError, match=r"save_sparse: path .* is a folder; "
                                                    r"expected a file path"):
            sk.save_sparse(model, p)


@pytest.mark.parametrize("text,msg", [
    ("{not json", r"not JSON"),
    ("{}", r"expected a dict with 'shapes' \(a list\) and 'layers' \(a dict\), got \[\]"),
    ('{"shapes": ["x"], "layers": {"0": {"x": {"foo": 1}}}}',
     r"layers\['0'\]\['x'\] is not a latency entry"),
    ('{"shapes": ["x"], "layers": {"0": []}}', r"layers\['0'\] must map shape labels")])
def test_latency_table_load_of_another_file_names_it(tmp_path, text, msg):
    from sparsekern.auto import LatencyTable
    p = tmp_path / "t.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=r"LatencyTable.load: .*t.json' is not a saved latency "
                                         r"table.*" + msg):
        LatencyTable.load(p)


@pytest.mark.parametrize("returned", ["x", None, [0.5], torch.ones(2)])
def test_eval_fn_returning_a_non_number_is_named(returned):
    from sparsekern import prune
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with pytest.raises(TypeError, match=r"eval_fn\(model\) must return a number .*got "):
        prune.sensitivity_scan(model, lambda m: returned, ratios=[0.5])


def test_eval_fn_may_return_a_tensor_or_numpy_scalar():
    import numpy as np
    from sparsekern.prune.metric import evaluate
    m = torch.nn.Linear(2, 2)
    assert evaluate(lambda _: torch.tensor(0.25), m) == 0.25
    assert evaluate(lambda _: np.float32(0.5), m) == 0.5
    assert evaluate(lambda _: 3, m) == 3.0
    with pytest.raises(TypeError, match=r"got bool True"):
        evaluate(lambda _: True, m)


@pytest.mark.parametrize("bad", ["2", True, [2.0, "3"]])
def test_netadapt_budget_of_another_type_is_named(bad):
    from sparsekern.auto.netadapt import _per_shape
    shapes = ["a", "b"] if isinstance(bad, list) else ["a"]
    with pytest.raises(TypeError, match=r"target_speedup must be a positive number"):
        _per_shape(bad, shapes, "target_speedup")


def test_channel_prune_of_a_sparsified_model_names_the_packed_layers():
    from sparsekern import prune
    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    s = sk.sparsify(m, layout="csc", max_density=1.0)
    with pytest.raises(ValueError, match=r"channel_prune needs the dense model .*2 SparseLinear "
                                         r"layers are packed by sparsekern.sparsify"):
        prune.channel_prune(s, 0.5, example_input=torch.randn(4, 32))
