"""The run-time ISA switch SPARSEKERN_CPU_ISA: every ISA the machine has agrees with the
portable kernels and the reference, on edge shapes too."""
import re

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension
from sparsekern.timing.machine import extension_isa

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
C = _extension._C

needs_avx2 = pytest.mark.skipif(C is None or not C.cpu_has_avx2(),
                                reason="this CPU has no AVX2/FMA/F16C")


def _available_isas():
    if C is None:
        return []
    return [isa for isa, has in (("avx2", C.cpu_has_avx2()), ("avx512", C.cpu_has_avx512()))
            if has]


def _isa_params():
    """Every vector ISA, each skipped (with the reason) where this CPU lacks it."""
    have = set(_available_isas())
    return [pytest.param(isa, marks=pytest.mark.skipif(isa not in have,
                                                       reason=f"this CPU/OS has no {isa}"))
            for isa in ("avx2", "avx512")]


def test_switch_is_read_on_reload(cpu_isa_env):
    cpu_isa_env("portable")
    assert C.cpu_isa() == "portable"
    best = "avx512" if C.cpu_has_avx512() else "avx2" if C.cpu_has_avx2() else "portable"
    cpu_isa_env("auto")
    assert C.cpu_isa() == best
    cpu_isa_env(None)
    assert C.cpu_isa() == best
    for isa in _available_isas():
        cpu_isa_env(isa)
        assert C.cpu_isa() == isa


def test_avx512_implies_avx2():
    assert not C.cpu_has_avx512() or C.cpu_has_avx2()


def test_unknown_isa_is_rejected_naming_the_choices(cpu_isa_env):
    A = sk.to_sparse(torch.randn(8, 8), layout="csc")
    cpu_isa_env("sse9")
    with pytest.raises(ValueError, match="'sse9'.*'portable', 'avx2', 'avx512', 'auto'"):
        torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(8, 2))


@pytest.mark.skipif(C is None or C.cpu_has_avx512(), reason="this CPU has AVX-512")
def test_forcing_a_missing_avx512_is_an_error(cpu_isa_env):
    A = sk.to_sparse(torch.randn(8, 8), layout="csc")
    cpu_isa_env("avx512")
    with pytest.raises(ValueError, match="SPARSEKERN_CPU_ISA='avx512' but this CPU"):
        torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(8, 2))
    with pytest.raises(ValueError, match="SPARSEKERN_CPU_ISA='avx512' but this CPU"):
        extension_isa()


@pytest.mark.parametrize("var,value,match", [
    ("isa", "AVX2", r"^SPARSEKERN_CPU_ISA='AVX2' is not a CPU instruction set choice; expected "
                    r"one of 'portable', 'avx2', 'avx512', 'auto'$"),
    ("scatter", "fast", r"^SPARSEKERN_CPU_SCATTER='fast' is not a scatter choice")])
def test_extension_isa_raises_what_the_kernels_raise(cpu_isa_env, cpu_scatter_env, var, value,
                                                      match):
    """extension_isa() answered 'avx512' for SPARSEKERN_CPU_ISA=AVX2 while every kernel call
    raised: a report then named an ISA nothing ran. It raises the kernels' own error."""
    A = sk.to_sparse(torch.randn(8, 8), layout="csc")
    (cpu_isa_env if var == "isa" else cpu_scatter_env)(value)
    with pytest.raises(ValueError, match=match) as kernel:
        torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(8, 2))
    with pytest.raises(ValueError, match=match) as says:
        extension_isa()
    assert str(says.value) == str(kernel.value)
    with pytest.raises(ValueError, match=match):
        C.cpu_isa()
    (cpu_isa_env if var == "isa" else cpu_scatter_env)(None)
    assert extension_isa() == C.cpu_isa() in ("portable", "avx2", "avx512")


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("layout,block", [("2:4", None), ("bsr", (32, 32)), ("bsr", (1, 8)),
                                          ("bsr", (4, 1)), ("bsr", (8, 1)), ("bsr", (5, 7)),
                                          ("csc", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_each_isa_and_portable_agree(cpu_isa_env, isa, layout, block, dtype):
    torch.manual_seed(0)
    M, K = 70, 132
    W = torch.randn(M, K)
    if layout == "2:4":
        W = W.reshape(M, K // 4, 4)
        W = W.scatter(-1, W.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
        A = sk.to_sparse(W.to(dtype), layout="2:4")
    elif layout == "bsr":
        A = sk.to_sparse(W.to(dtype), layout="bsr", blocksize=block)
    else:
        A = sk.to_sparse((W * (torch.rand(M, K) < 0.2)).to(dtype), layout="csc")
    for N in (1, 3, 8, 15, 16, 17, 24, 33, 70):
        B = torch.randn(N, K).t()
        outs = {}
        for which in (isa, "portable"):
            cpu_isa_env(which)
            assert C.cpu_isa() == which
            outs[which] = torch.ops.sparsekern.spmm(*A.op_args(), B)
        torch.testing.assert_close(outs[isa], outs["portable"], rtol=1e-5, atol=1e-5)
        ref = A.to_dense().double() @ B.double()
        torch.testing.assert_close(outs[isa].double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("layout", ["2:4", "bsr", "csc"])
@pytest.mark.parametrize("M,K", [(1, 4), (17, 36), (33, 100), (64, 260), (5, 1028),
                                 (9, 52), (6, 120)])
def test_each_isa_on_edge_shapes(cpu_isa_env, isa, layout, M, K):
    """M, K, N not multiples of the vector widths (8, 16, 32 columns per step), N=1, bias,
    row- and column-major B, threads splitting the rows: the reference result."""
    g = torch.Generator().manual_seed(M * 1000 + K)
    W = torch.randn(M, K, generator=g)
    if layout in ("2:4", "1:4"):
        G = W.reshape(M, K // 4, 4)
        W = G.scatter(-1, G.abs().argsort(-1)[..., :4 - int(layout[0])], 0.0).reshape(M, K)
        A = sk.to_sparse(W, layout="2:4")
    elif layout == "bsr":
        W = W * (torch.rand(M, K, generator=g) < 0.5)
        A = sk.to_sparse(W, layout="bsr", blocksize=(8, 4))
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.3)
        A = sk.to_sparse(W, layout="csc")
    cpu_isa_env(isa)
    bias = torch.randn(M, generator=g)
    for N in (1, 2, 15, 16, 17, 31, 32, 33, 65):
        for B in (torch.randn(K, N, generator=g), torch.randn(N, K, generator=g).t()):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
            ref = (W.double() @ B.double() + bias.double()[:, None]).float()
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def _check_small_n(A, Wd, g, atol):
    """spmm(A, B, bias) against Wd @ B (float64) for N = 2..17, 24, 33, 64 and 65, each B
    layout (row-major, column-major, strided), with and without bias, on 1 and 2 threads."""
    M, K = Wd.shape
    bias = torch.randn(M, generator=g)
    prev = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for N in [*range(2, 18), 24, 33, 64, 65]:
                bs = {"row-major": torch.randn(K, N, generator=g),
                      "column-major": torch.randn(N, K, generator=g).t(),
                      "strided": torch.randn(2 * K, 3 * N, generator=g)[::2, ::3]}
                for name, B in bs.items():
                    bb = bias if N % 2 else None
                    out = torch.ops.sparsekern.spmm(*A.op_args(), B, bb)
                    ref = Wd @ B.double() + (0 if bb is None else bb.double()[:, None])
                    torch.testing.assert_close(out, ref.float(), rtol=1e-4, atol=atol,
                                               msg=lambda m: f"N={N} {name} t={threads}: {m}")
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("M,K", [(1, 4), (7, 36), (13, 100), (6, 260), (9, 1028), (5, 1030),
                                 (37, 517), (40, 1030)])
def test_semi24_small_n(cpu_isa_env, isa, dtype, M, K):
    """2:4 at N = 2..17, 24, 33, 64, 65 (AVX-512 runs a permuting multi-column GEMV up to N = 6,
    16-row blocks with the lanes over rows from 7 to 64, in passes of 7-16 columns, and at 65
    panels of such blocks for a column-major B, the packed panels and a tail column for the
    other layouts): tiles of 4 and 2 rows and their tail rows, partial 16-row blocks
    on either side of the threads' split, K tails of the 32-, 16- and 4-column steps and of the
    512-column chunks, each B layout, bias, 1 and 2 threads: the reference result."""
    g = torch.Generator().manual_seed(M * 1000 + K)
    Kp = (K + 3) // 4 * 4  # a K that is no multiple of 4: the last group is cut
    G = torch.randn(M, Kp // 4, 4, generator=g)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, Kp)[:, :K]
    A = sk.to_sparse(W.to(dtype), layout="2:4")
    Wd = A.to_dense().double()
    cpu_isa_env(isa)
    _check_small_n(A, Wd, g, atol=1e-4)


def _semi24_with_padding_values(M, K, value, g):
    """A 2:4 weight [M, K] (K % 4 == 1) whose last group of every row stores its two values at
    columns K and K + 1, past K: format padding that must never count, set to `value`."""
    Kp = (K + 3) // 4 * 4
    G = torch.randn(M, Kp // 4, 4, generator=g)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, Kp)[:, :K]
    A = sk.to_sparse(W, layout="2:4")
    meta, vals = A.indices.clone(), A.values.clone()
    last = Kp // 4 - 1
    byte, shift = last // 2, 4 * (last % 2)
    meta[:, byte] = (meta[:, byte] & ~(0xF << shift)) | ((1 | 2 << 2) << shift)  # (1, 2)
    vals[:, 2 * last:] = value
    A2 = sk.formats.from_parts("2:4", vals, meta, A.offsets, A.shape, validate=False)
    Wd = W.double().clone()
    Wd[:, 4 * last:] = 0.0  # the last group's one real column now stores nothing
    return A2, Wd


def _semi24_weight(M, K, dtype, g):
    """A random 2:4 weight [M, K] (the 2 largest of each 4; a cut last group when K % 4) packed
    with values of `dtype`, and its dense float64 form."""
    G = torch.randn(M, (K + 3) // 4, 4, generator=g)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, -1)[:, :K]
    A = sk.to_sparse(W.to(dtype), layout="2:4")
    return A, A.to_dense().double()


def _right_and_the_same_on_1_and_2_threads(A, Wd, B, bias):
    """spmm(A, B) + bias on 1 and 2 threads: the float64 reference Wd @ B within fp32
    rounding, and the same bits on both (the caller restores the thread count)."""
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(torch.ops.sparsekern.spmm(*A.op_args(), B, bias))
    ref = Wd @ B.double() + (0 if bias is None else bias.double()[:, None])
    N = B.shape[1]
    torch.testing.assert_close(outs[0], ref.float(), rtol=1e-4, atol=1e-3,
                               msg=lambda m: f"N={N}: {m}")
    assert torch.equal(outs[0], outs[1]), f"N={N}: 1 and 2 threads differ"


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_semi24_lanes_over_rows_panels(cpu_isa_env, isa, dtype):
    """2:4 past 64 columns of a column-major B (AVX-512: panels of 8 16-row blocks over K
    chunks of 64 groups, B's columns in slices of at most 256, passes of 7-16 columns): several
    panels in each thread's rows and a partial one (M = 300: 19 blocks, the last of 12 rows),
    4 K chunks and a cut last group (K = 1030), 1-3 slices, bias: the reference result, and
    the same bits on 1 and 2 threads."""
    g = torch.Generator().manual_seed(300)
    M, K = 300, 1030
    A, Wd = _semi24_weight(M, K, dtype, g)
    bias = torch.randn(M, generator=g)
    cpu_isa_env(isa)
    prev = torch.get_num_threads()
    try:
        for N in (65, 100, 256, 257, 520):
            _right_and_the_same_on_1_and_2_threads(A, Wd, torch.randn(N, K, generator=g).t(),
                                                   bias)
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("N", [7, 9, 16, 17, 40, 64, 65, 130, 300])
def test_semi24_lanes_over_rows_edges(cpu_isa_env, isa, N):
    """The 16-row blocks (AVX-512, N >= 7; past 64 columns in panels of blocks): NaN and Inf
    in B reach only the rows that store their column; NaN stored past K never counts; a bad
    nibble in any block is reported; the same bits on 1 and 2 threads."""
    g = torch.Generator().manual_seed(N)
    cpu_isa_env(isa)
    prev = torch.get_num_threads()
    try:
        M, K = 45, 517
        A, Wd = _semi24_with_padding_values(M, K, float("nan"), g)
        B = torch.randn(K, N, generator=g)
        B[7, 0], B[300, N - 1], B[516, 1] = float("nan"), float("inf"), float("-inf")
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(torch.ops.sparsekern.spmm(*A.op_args(), B.t().contiguous().t()))
        # Only stored entries meet B (0 * inf would be NaN in a dense product).
        terms = Wd[:, :, None] * B.double()[None]
        ref = torch.where(Wd[:, :, None] != 0, terms, torch.zeros(())).sum(1)
        for out in outs:
            assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN pattern differs"
            assert torch.equal(torch.isinf(out), torch.isinf(ref)), "Inf pattern differs"
            fin = torch.isfinite(ref)
            torch.testing.assert_close(out.double()[fin], ref[fin], rtol=1e-4, atol=1e-4)
        assert torch.equal(outs[0].nan_to_num(), outs[1].nan_to_num())
        assert torch.isfinite(ref[:, 2:N - 1]).all()  # columns with no NaN / Inf anywhere
        W = torch.randn(40, 64, generator=g)
        W = W.reshape(40, 16, 4).scatter(-1, W.reshape(40, 16, 4).abs().argsort(-1)[..., :2],
                                         0.0).reshape(40, 64)
        A = sk.to_sparse(W, layout="2:4")
        for row, group in ((0, 0), (21, 9), (39, 15)):
            meta = A.indices.clone()
            byte, shift = group // 2, 4 * (group % 2)
            meta[row, byte] = (meta[row, byte] & ~(0xF << shift)) | ((2 | 1 << 2) << shift)
            bad = sk.formats.from_parts("2:4", A.values, meta, A.offsets, A.shape,
                                        validate=False)
            with pytest.raises(ValueError, match=r"2:4 indices .*strictly increasing"):
                torch.ops.sparsekern.spmm(*bad.op_args(), torch.randn(N, 64, generator=g).t())
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("block", [(32, 32), (16, 16), (64, 64), (8, 16), (3, 48), (16, 8)],
                         ids=str)
@pytest.mark.parametrize("M,K,density", [(70, 100, 0.5), (33, 1030, 0.3), (64, 512, 1.0),
                                         (40, 4100, 0.6), (9, 20, 0.0)])
def test_bsr_small_n(cpu_isa_env, isa, dtype, block, M, K, density):
    """BSR at N = 2..13 (AVX-512 runs per-row dot products over 16k-wide blocks up to N = 8,
    in chunks of blocks, the panels from 9): row tiles and their tails, block rows past M,
    block columns past K, empty block rows, long block rows (several chunks), each B layout,
    bias, 1 and 2 threads: the reference result."""
    g = torch.Generator().manual_seed(M * 1000 + K)
    bm, bk = block
    keep = torch.rand((M + bm - 1) // bm, (K + bk - 1) // bk, generator=g) < density
    keep[0] = False  # an empty block row
    mask = keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    W = (torch.randn(M, K, generator=g) * mask).to(dtype)
    A = sk.to_sparse(W, layout="bsr", blocksize=block)
    Wd = W.double()
    cpu_isa_env(isa)
    _check_small_n(A, Wd, g, atol=1e-3)  # float32 sums of up to 4100 products


#: SPARSEKERN_CPU_SCATTER choices: the AVX-512 CSC GEMV's scatter-adds (the other ISAs
#: ignore it), both on every CPU that has AVX-512.
SCATTERS = ["scalar", "vector"]


def _csc_raw(M, K, density, g, index_dtype=torch.int16):
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)
    A = sk.to_sparse(W, layout="csc")
    return A.values.clone(), A.indices.to(index_dtype), A.offsets.clone(), W


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32], ids=str)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("scatter", SCATTERS)
def test_csc_gemv_long_columns(cpu_isa_env, cpu_scatter_env, scatter, isa, index_dtype, threads):
    cpu_scatter_env(scatter)
    """The N=1 column walk takes 16 rows per range check: columns of 0..M entries (chunks
    of 16 plus a tail), zero and non-zero activations, 1 and 2 threads."""
    g = torch.Generator().manual_seed(7)
    M, K = 203, 97
    values, rows, offsets, W = _csc_raw(M, K, 0.6, g, index_dtype)
    cpu_isa_env(isa)
    assert C.cpu_isa() == isa
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for zeros in (0.0, 0.5):
            x = torch.randn(K, 1, generator=g) * (torch.rand(K, 1, generator=g) >= zeros)
            out = torch.ops.sparsekern.spmm(values, rows, offsets, M, K, "csc", x)
            torch.testing.assert_close(out.double(), W.double() @ x.double(), rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("where", [0, 5, 15, 16, 31, 40])
@pytest.mark.parametrize("bad", [-1, 64, 30000])
@pytest.mark.parametrize("scatter", SCATTERS)
def test_csc_gemv_bad_row_anywhere_in_a_chunk(cpu_isa_env, cpu_scatter_env, scatter, isa, where, bad):
    cpu_scatter_env(scatter)
    """A row index out of range at any lane of a 16-row chunk or in the tail is an error."""
    g = torch.Generator().manual_seed(3)
    values, rows, offsets, _ = _csc_raw(64, 3, 1.0, g)  # 3 full columns of 64 rows
    rows[64 + where] = bad  # in the second column
    cpu_isa_env(isa)
    with pytest.raises(ValueError, match=rf"csc row indices\[{64 + where}\]={bad} is out of range"):
        torch.ops.sparsekern.spmm(values, rows, offsets, 64, 3, "csc", torch.ones(3, 1))


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("scatter", SCATTERS)
def test_csc_gemv_repeated_and_unsorted_rows_add_up(cpu_isa_env, cpu_scatter_env, scatter, isa):
    cpu_scatter_env(scatter)
    """Rows repeated or out of order within a column (not what to_sparse makes, but in range)
    add up like the reference: the scatter-adds never assume distinct rows."""
    M, K = 40, 2
    rows = torch.tensor([3] * 20 + list(range(39, 19, -1)) + [0, 1, 1, 0] * 5, dtype=torch.int16)
    offsets = torch.tensor([0, 40, 60], dtype=torch.int32)
    values = torch.randn(60)
    x = torch.randn(K, 1)
    W = torch.zeros(M, K, dtype=torch.float64)
    for k in range(K):
        for j in range(int(offsets[k]), int(offsets[k + 1])):
            W[int(rows[j]), k] += float(values[j])
    cpu_isa_env(isa)
    out = torch.ops.sparsekern.spmm(values, rows, offsets, M, K, "csc", x)
    torch.testing.assert_close(out.double(), W @ x.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("scatter", SCATTERS)
def test_csc_gemv_nonfinite_weights_and_activations(cpu_isa_env, cpu_scatter_env, scatter, isa):
    cpu_scatter_env(scatter)
    """Inf/NaN weights meet zero activations (0 * Inf = NaN, never skipped) and Inf/NaN
    activations meet stored entries, as in the reference."""
    g = torch.Generator().manual_seed(5)
    values, rows, offsets, W = _csc_raw(50, 40, 0.7, g)
    values[3] = float("inf")
    values[40] = float("nan")
    x = torch.randn(40, 1, generator=g)
    x[::3] = 0.0
    x[7] = float("inf")
    cpu_isa_env(isa)
    out = torch.ops.sparsekern.spmm(values, rows, offsets, 50, 40, "csc", x)
    cols = torch.repeat_interleave(torch.arange(40), offsets.diff().long())
    # Only stored entries meet x (a stored Inf times a zero activation is NaN).
    ref = torch.zeros(50, 1, dtype=torch.float64).index_add_(
        0, rows.long(), values.double()[:, None] * x.double()[cols])
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.skipif(C is None or not C.cpu_has_avx512(), reason="this CPU/OS has no AVX-512")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("zeros", [0.0, 0.5])
def test_csc_gemv_vector_and_scalar_scatter_give_the_same_sums(cpu_isa_env, cpu_scatter_env,
                                                               dtype, zeros):
    """One gather-FMA-scatter per 16 strictly increasing rows and 16 scalar FMAs round alike:
    the outputs are equal bit for bit, sorted columns (vector blocks) and columns with a
    repeated row in some blocks (scalar blocks in the vector mode) alike."""
    g = torch.Generator().manual_seed(11)
    M, K = 700, 301
    values, rows, offsets, W = _csc_raw(M, K, 0.4, g)
    values = values.to(dtype)
    rows_dup = rows.clone()
    starts = offsets[:-1].long()
    long_cols = starts[(offsets.diff() > 40)][:50]
    rows_dup[long_cols + 20] = rows_dup[long_cols + 19]  # a repeat inside a 16-row block
    x = torch.randn(K, 1, generator=g) * (torch.rand(K, 1, generator=g) >= zeros)
    cpu_isa_env("avx512")
    for r in (rows, rows_dup):
        outs = {}
        for mode in ("scalar", "vector", "auto"):
            cpu_scatter_env(mode)
            outs[mode] = torch.ops.sparsekern.spmm(values, r, offsets, M, K, "csc", x)
        assert torch.equal(outs["scalar"], outs["vector"])
        assert torch.equal(outs["auto"], outs["vector"])
        dense = torch.zeros(M, K, dtype=torch.float64)
        cols = torch.repeat_interleave(torch.arange(K), offsets.diff().long())
        dense.index_put_((r.long(), cols), values.double(), accumulate=True)
        torch.testing.assert_close(outs["vector"].double(), dense @ x.double(), rtol=1e-4,
                                   atol=1e-4)


def test_unknown_scatter_choice_is_rejected_naming_the_choices(cpu_scatter_env):
    cpu_scatter_env("gather")
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_SCATTER='gather' is not a scatter "
                                         r"choice; expected one of 'vector', 'scalar', 'auto'"):
        torch.ops.sparsekern.spmm(*_csc_raw(8, 4, 0.5, torch.Generator().manual_seed(0))[:3],
                                  8, 4, "csc", torch.ones(4, 1))
    cpu_scatter_env(None)
    torch.ops.sparsekern.spmm(*_csc_raw(8, 4, 0.5, torch.Generator().manual_seed(0))[:3],
                              8, 4, "csc", torch.ones(4, 1))


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("layout", ["2:4", "1:4", "csc", "bsr16x16", "bsr4x8"])
@pytest.mark.parametrize("N", [9, 10, 11, 17, 18, 19, 25, 33, 34, 66, 131])
@pytest.mark.parametrize("strided", [False, True], ids=["x.T", "B row-major"])
@pytest.mark.parametrize("threads", [1, 2])
def test_panel_tail_columns_run_as_gemv(cpu_isa_env, isa, layout, N, strided, threads):
    """16q + 1..3 columns: the panels take the first columns and the last ones (AVX-512: 2:4
    and 1:4 1..3, BSR 1..2 or 1 when blocks are not 16k wide, CSC 1 (where gathers are
    microcoded only at 32q + 1 columns or K >= 1024: see test_csc_tail_rule_both_ways);
    AVX2: 1) run as GEMV /
    small-N on each row part after its last panel (split_panel_tail, PanelTail); every column,
    its bias and both B layouts give the reference result, on one thread and on two with many
    row parts and up to three panels (portable, which keeps its panels, at the same N)."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    M, K = (37, 100) if threads == 1 else (301, 260)
    W = torch.randn(M, K, generator=g)
    blocks = {}
    if layout in ("2:4", "1:4"):
        G = W.reshape(M, K // 4, 4)
        W = G.scatter(-1, G.abs().argsort(-1)[..., :4 - int(layout[0])], 0.0).reshape(M, K)
    elif layout.startswith("bsr"):  # blocks cut at the edges (M, K not multiples)
        bm, bk = (int(v) for v in layout[3:].split("x"))
        keep = torch.rand(-(-M // bm), -(-K // bk), generator=g) < 0.4
        W = W * keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
        layout, blocks = "bsr", {"blocksize": (bm, bk)}
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.2)
    A = sk.to_sparse(W, layout=layout, **blocks)
    B = torch.randn(K, N, generator=g) if strided else torch.randn(N, K, generator=g).t()
    bias = torch.randn(M, generator=g)
    cpu_isa_env(isa)
    _assert_spmm_matches(A, W, B, bias, threads)


def _assert_spmm_matches(A, W, B, bias, threads):
    """spmm(A, B) + bias on `threads` threads equals the float64 product of the dense W."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
    finally:
        torch.set_num_threads(before)
    want = (W.double() @ B.double() + bias.double()[:, None]).float()
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("scatter", ["scalar", "vector"])
@pytest.mark.parametrize("K", [300, 1030])
@pytest.mark.parametrize("N", [17, 33, 49, 65])
def test_csc_tail_rule_both_ways(cpu_isa_env, cpu_scatter_env, isa, scatter, K, N):
    """CSC's tail column: where gathers are microcoded (SPARSEKERN_CPU_SCATTER=scalar, AMD's
    default) one column past 16q runs in the panel at 17 / 49 columns with K < 1024 and as the
    fused GEMV otherwise; with fast gathers (vector, Intel's default) always as the GEMV. Both
    choices, on every ISA, give the reference result, with bias, on 2 threads."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    M = 203
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < 0.1)
    A = sk.to_sparse(W, layout="csc")
    B = torch.randn(N, K, generator=g).t()
    bias = torch.randn(M, generator=g)
    cpu_scatter_env(scatter)
    cpu_isa_env(isa)
    _assert_spmm_matches(A, W, B, bias, 2)


#: Layouts whose AVX-512 panel kernels follow SPARSEKERN_CPU_BROADCAST.
BROADCAST_LAYOUTS = ["2:4", "1:4"]


def _broadcast_weight(layout, M, K, g):
    """A random [M, K] weight with `layout`'s zeros (n:4: 4 - n of every 4 along K)."""
    W = torch.randn(M, K, generator=g)
    Kp = -(-K // 4) * 4
    Wp = torch.nn.functional.pad(W, (0, Kp - K)).view(M, -1, 4)
    drop = torch.rand(Wp.shape, generator=g).argsort(-1)[..., :4 - int(layout[0])]
    return Wp.scatter(-1, drop, 0.0).view(M, Kp)[:, :K]


def _choices_give_the_same_sums(layout, dtype, cases, set_choice, choices, calls, bias_if):
    """For each (M, K, N, threads) case: a fresh `layout` weight [M, K] of `dtype`, B [K, N]
    row- and column-major, bias when bias_if(M, N); the op under each of `choices`
    (set_choice(c), then `calls` calls): every output the same bits as the first one, and
    the float64 reference's sums. A fresh seed each run, named on failure."""
    seed = torch.seed() % 2**31
    g = torch.Generator().manual_seed(seed)
    before = torch.get_num_threads()
    try:
        for M, K, N, threads in cases:
            W = _broadcast_weight(layout, M, K, g).to(dtype)
            A = sk.to_sparse(W, layout=layout)
            for B in (torch.randn(K, N, generator=g), torch.randn(N, K, generator=g).t()):
                B = B.to(dtype)
                bias = torch.randn(M, generator=g).to(dtype) if bias_if(M, N) else None
                torch.set_num_threads(threads)
                outs = []
                for choice in choices:
                    set_choice(choice)
                    outs += [(choice, torch.ops.sparsekern.spmm(*A.op_args(), B, bias))
                             for _ in range(calls)]
                what = f"seed {seed}: {layout} {dtype} M={M} K={K} N={N} B {tuple(B.stride())}"
                for choice, out in outs[1:]:
                    assert torch.equal(out, outs[0][1]), f"{what}: {choice}"
                want = W.double() @ B.double()
                if bias is not None:
                    want = want + bias.double()[:, None]
                tol = 1e-4 if dtype == torch.float32 else 2e-2
                torch.testing.assert_close(outs[0][1].double(), want, rtol=tol, atol=tol,
                                           msg=lambda m: f"{what}: {m}")
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(C is None or not C.cpu_has_avx512(), reason="this CPU/OS has no AVX-512")
@pytest.mark.parametrize("layout", BROADCAST_LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_panel_broadcasts_give_the_same_sums(cpu_isa_env, cpu_broadcast_env, layout, dtype):
    """The AVX-512 panels broadcast each stored weight either by a load or by permutes of a
    4-weight load (SPARSEKERN_CPU_BROADCAST): the same products in the same order, so the same
    sums bit for bit, and the reference's. Widths 12-100 (1-4 zmm per panel row, tails past
    16q), K with an odd last group and padding, rows past the last full tile, B row- and
    column-major, bias or none, 1 and 2 threads."""
    cpu_isa_env("avx512")
    cases = [(29, 70, 12, 1), (64, 388, 16, 2), (13, 9, 17, 1), (100, 256, 32, 2),
             (37, 130, 48, 1), (25, 66, 64, 2), (61, 200, 100, 2), (12, 6, 20, 1)]
    _choices_give_the_same_sums(layout, dtype, cases, cpu_broadcast_env,
                                ("register", "load", "auto"), 1, lambda M, N: N % 2 == 0)


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
@pytest.mark.parametrize("layout", BROADCAST_LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gemv_prefetch_choices_give_the_same_sums(cpu_isa_env, cpu_prefetch_env, isa, layout,
                                                  dtype):
    """The n:4 GEMVs (AVX-512 2:4 and 1:4, 2:4's AVX-512 small-N kernel, the AVX2 2:4 GEMV)
    fetch the weight ahead or not (SPARSEKERN_CPU_PREFETCH: always, never, auto = only when
    the weight does not look cached), and 1:4's AVX-512 GEMV picks its threads by the same
    probe: the loads and the split change, not the arithmetic, so the same sums bit for bit
    (two calls each), and the reference's. N = 1-8, K with an odd last group and padding, rows past the last 4-row tile
    and parts of several tiles, small weights called back to back (cached) and a larger one
    (8-16 MB of values: fetched under auto on a last-level cache of up to 32-64 MB), B row- and
    column-major, bias or none, 1 and 2 threads."""
    has = {"avx2": C is not None and C.cpu_has_avx2(),
           "avx512": C is not None and C.cpu_has_avx512()}
    if not has[isa]:
        pytest.skip(f"this CPU/OS has no {isa}")
    cpu_isa_env(isa)
    cases = [(29, 70, 1, 1), (64, 388, 1, 2), (13, 9, 1, 1), (203, 1030, 1, 2),
             (100, 256, 2, 2), (37, 130, 4, 1), (61, 200, 5, 2), (45, 518, 8, 2),
             (768, 768, 1, 2)]
    if dtype == torch.float32:
        cases.append((2048, 4096, 1, 2))
    _choices_give_the_same_sums(layout, dtype, cases, cpu_prefetch_env,
                                ("always", "never", "auto"), 2, lambda M, N: M % 2 == 1)


MB = 1 << 20


@pytest.mark.skipif(C is None, reason="needs the compiled extension")
@pytest.mark.parametrize("elapsed,nbytes,llc,fast_clock,cached", [
    (40, 1 * MB, 32 * MB, True, True),     # a few L3 hits
    (149, 8 * MB, 32 * MB, True, True),    # just under the threshold, a quarter of the LLC
    (150, 1 * MB, 32 * MB, True, False),   # at the threshold: from memory
    (900, 1 * MB, 32 * MB, True, False),   # DRAM latency (or a preempted probe)
    (40, 8 * MB + 1, 32 * MB, True, False),  # larger than a quarter of the LLC: always fetch
    (40, 2 * MB, 0, True, True),           # LLC unknown: taken as 8 MB
    (40, 2 * MB + 1, 0, True, False),
    (40, 1 * MB, 32 * MB, False, False),   # a clock too slow to tell
    (40, 0, 32 * MB, True, False),         # nothing to probe
    (-1, 1 * MB, 32 * MB, True, False),    # a clock that went backwards
    (0, 1 * MB, 32 * MB, True, True),      # elapsed 0: "is a probe worth taking"
])
def test_cache_probe_verdict_on_fake_clocks(elapsed, nbytes, llc, fast_clock, cached):
    """The GEMVs skip their fetch-ahead only when the weight fits in a quarter of the LLC, the
    clock can tell, and 8 of its lines loaded in under 150 ns (csrc/cpu/isa.h)."""
    assert torch.ops.sparsekern._cache_probe_verdict(elapsed, nbytes, llc, fast_clock) is cached


@pytest.mark.parametrize("var,bad,message", [
    ("SPARSEKERN_CPU_BROADCAST", "stream", "is not a weight broadcast choice; expected one of "
                                           "'register', 'load', 'auto'"),
    ("SPARSEKERN_CPU_PREFETCH", "sometimes", "is not a weight prefetch choice; expected one of "
                                             "'always', 'never', 'auto'"),
])
def test_unknown_kernel_choice_is_rejected_naming_the_choices(monkeypatch, var, bad, message):
    """A bad SPARSEKERN_CPU_BROADCAST / _PREFETCH: every kernel call (and extension_isa)
    raises a ValueError naming the variable, its value and the choices, until it is fixed."""
    A = sk.to_sparse(torch.randn(8, 8), layout="csc")
    monkeypatch.setenv(var, bad)
    sk.backends.reload_env()
    try:
        with pytest.raises(ValueError, match="^" + re.escape(f"{var}='{bad}' {message}") + "$"):
            torch.ops.sparsekern.spmm(*A.op_args(), torch.ones(8, 1))
        with pytest.raises(ValueError, match=re.escape(f"{var}='{bad}'")):
            extension_isa()
    finally:
        monkeypatch.delenv(var)
        sk.backends.reload_env()
    torch.ops.sparsekern.spmm(*A.op_args(), torch.ones(8, 1))


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("M,K", [(300, 96), (64, 384), (31, 64), (80, 32), (2100, 64)])
def test_semi24_hybrid_blocks(cpu_isa_env, isa, dtype, M, K):
    """2:4 past 64 columns of a column-major B with K a multiple of 32 (AVX-512: 16-row blocks
    and panel-form rows in one loop, in pair units of 32 rows and 64-column sub-slices, the
    parts splitting the rows when each gets 256+ (M = 2100 on 2 threads, M = 300 on 1), else
    the columns; the last rows (M % 32) and the last columns run the lanes-over-rows panels):
    M = 300 (9 units and 12 rows), 64 (2 units), 31 (none), 80, 2100 (8 row parts); a
    last K chunk of 8 groups (K = 96); N with 0, 4 (fewer than the 7 a pass needs) and 7+
    columns past the sub-slices, uneven column parts, B with a row stride past K; bias and
    none: the reference result, and the same bits on 1 and 2 threads."""
    g = torch.Generator().manual_seed(M * 100 + K)
    A, Wd = _semi24_weight(M, K, dtype, g)
    bias = torch.randn(M, generator=g)
    cpu_isa_env(isa)
    prev = torch.get_num_threads()
    try:
        for N, pad in ((128, 0), (256, 3), (260, 0), (263, 0), (520, 5), (1000, 0)):
            B = torch.randn(N, K + pad, generator=g)[:, :K].t()
            _right_and_the_same_on_1_and_2_threads(A, Wd, B, bias if N % 2 == 0 else None)
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("isa", _isa_params())
def test_semi24_hybrid_blocks_nan_inf_and_bad_metadata(cpu_isa_env, isa):
    """In the hybrid blocks (K = 128, N = 300) NaN and Inf in B reach only the rows that store
    their column, whichever form (block or panel-form row) computes the row; a bad nibble in a
    block row, a panel-form row or a last row is reported."""
    g = torch.Generator().manual_seed(7)
    cpu_isa_env(isa)
    M, K, N = 70, 128, 300
    G = torch.randn(M, K // 4, 4, generator=g)
    W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    A = sk.to_sparse(W, layout="2:4")
    Wd = A.to_dense().double()
    B = torch.randn(N, K, generator=g)
    B[0, 7], B[N - 1, 100], B[130, 127] = float("nan"), float("inf"), float("-inf")
    B = B.t()
    out = torch.ops.sparsekern.spmm(*A.op_args(), B)
    terms = Wd[:, :, None] * B.double()[None]
    ref = torch.where(Wd[:, :, None] != 0, terms, torch.zeros(())).sum(1)
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN pattern differs"
    assert torch.equal(torch.isinf(out), torch.isinf(ref)), "Inf pattern differs"
    assert torch.isnan(ref[:, 0]).any() and not torch.isnan(ref[:, 0]).all()
    fin = torch.isfinite(ref)
    torch.testing.assert_close(out.double()[fin], ref[fin], rtol=1e-4, atol=1e-4)
    for row, group in ((3, 0), (20, 31), (40, 5), (69, 17)):  # block, block, panel-form, last
        meta = A.indices.clone()
        byte, shift = group // 2, 4 * (group % 2)
        meta[row, byte] = (meta[row, byte] & ~(0xF << shift)) | ((2 | 1 << 2) << shift)
        bad = sk.formats.from_parts("2:4", A.values, meta, A.offsets, A.shape, validate=False)
        with pytest.raises(ValueError, match=r"2:4 indices .*strictly increasing"):
            torch.ops.sparsekern.spmm(*bad.op_args(), B)
