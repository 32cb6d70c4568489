"""Hand-made format tensors with bad indices are rejected by the CPU kernels, never read
out of bounds: through the public op's C++ fast path and through sparsekern::_spmm_cpu (the
entry the Python path uses)."""
import pytest
import torch

import sparsekern as sk
from sparsekern import _extension

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")


def fast_path(values, indices, offsets, M, K, layout, B):
    return torch.ops.sparsekern.spmm(values, indices, offsets, M, K, layout, B)


def cpu_op(values, indices, offsets, M, K, layout, B):
    out = torch.empty(M, B.shape[1])
    torch.ops.sparsekern._spmm_cpu(values, indices, offsets, M, K, layout, B, None, out)
    return out


ENTRIES = [pytest.param(fast_path, id="fast-path"), pytest.param(cpu_op, id="_spmm_cpu")]


def csc_parts(M=20, K=16):
    W = torch.randn(M, K) * (torch.rand(M, K) < 0.4)
    W[0, 0] = 1.0
    A = sk.to_sparse(W, layout="csc")
    return A.values, A.indices.clone(), A.offsets.clone(), M, K


def bsr_parts(M=20, K=24, block=(4, 8)):
    W = torch.randn(M, K)
    A = sk.to_sparse(W, layout="bsr", blocksize=block)
    return A.values, A.indices.clone(), A.offsets.clone(), M, K


def semi24_parts(M=6, K=24):
    W = torch.randn(M, K).reshape(M, -1, 4)
    W[..., 1::2] = 0
    A = sk.to_sparse(W.reshape(M, K), layout="2:4")
    return A.values, A.indices.clone(), A.offsets, M, K


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("N", [1, 5])
@pytest.mark.parametrize("bad", [20, 1000, -1])
def test_csc_row_out_of_range(entry, N, bad):
    values, rows, offsets, M, K = csc_parts()
    rows = rows.int() if bad > 32767 else rows
    rows[-1] = bad
    # the kernel reports a bad index; the validator's message locates it
    with pytest.raises(ValueError, match=rf"csc row indices\[{rows.numel() - 1}\]={bad} is out of "
                                         rf"range; expected 0 <= index < {M}"):
        entry(values, rows, offsets, M, K, "csc", torch.ones(K, N))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("N", [1, 5])
def test_csc_row_out_of_range_in_a_skipped_column(entry, N):
    """The index check covers columns the EIE GEMV skips (zero activation) too."""
    values, rows, offsets, M, K = csc_parts()
    rows[0] = M + 3  # column 0
    B = torch.ones(K, N)
    B[0] = 0.0
    with pytest.raises(ValueError, match=rf"csc row indices\[0\]={M + 3} is out of range"):
        entry(values, rows, offsets, M, K, "csc", B)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("N", [1, 5])
@pytest.mark.parametrize("how", ["start", "decrease", "end-short", "end-long"])
def test_csc_bad_offsets(entry, N, how):
    values, rows, offsets, M, K = csc_parts()
    if how == "start":
        offsets[0] = 1
    elif how == "decrease":
        offsets[K // 2] = offsets[K // 2 + 1] + 1
    elif how == "end-short":
        offsets[-1] -= 1
    else:
        offsets[-1] += 5
    match = {"start": r"csc offsets must start at 0, got offsets\[0\]=1",
             "decrease": rf"csc offsets must not decrease: offsets\[{K // 2 + 1}\]=\d+ < "
                         rf"offsets\[{K // 2}\]=",
             "end-short": r"csc offsets must end at the number of stored entries \d+, got "
                          r"offsets\[-1\]=",
             "end-long": r"csc offsets must end at the number of stored entries"}[how]
    with pytest.raises(ValueError, match=match):
        entry(values, rows, offsets, M, K, "csc", torch.ones(K, N))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("N", [1, 5])
@pytest.mark.parametrize("block", [(4, 8), (1, 8), (8, 1), (4, 16), (16, 32)])  # 16k wide:
@pytest.mark.parametrize("bad", [3, 100, -2])                   # AVX-512's small-N kernel
def test_bsr_block_column_out_of_range(entry, N, block, bad):
    values, cols, offsets, M, K = bsr_parts(block=block)
    nbc = (K + block[1] - 1) // block[1]
    cols[-1] = bad if bad != 3 else nbc  # == ceil(K / bk)
    with pytest.raises(ValueError, match=rf"bsr block-column indices\[{cols.numel() - 1}\]="
                                         rf"{int(cols[-1])} is out of range; expected 0 <= index "
                                         rf"< {nbc}"):
        entry(values, cols, offsets, M, K, "bsr", torch.ones(K, N))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("N", [1, 5])
@pytest.mark.parametrize("how", ["start", "decrease", "end"])
def test_bsr_bad_offsets(entry, N, how):
    values, cols, offsets, M, K = bsr_parts()
    if how == "start":
        offsets[0] = 1
    elif how == "decrease":
        offsets[2] = offsets[1] - 1
    else:
        offsets[-1] = offsets[-1] + 2
    match = {"start": r"bsr offsets must start at 0, got offsets\[0\]=1",
             "decrease": r"bsr offsets must not decrease: offsets\[2\]=\d+ < offsets\[1\]=",
             "end": r"bsr offsets must end at the number of stored entries"}[how]
    with pytest.raises(ValueError, match=match):
        entry(values, cols, offsets, M, K, "bsr", torch.ones(K, N))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("N", [1, 5, 10, 16])  # GEMV, small N, its chunks, panels
# nibble = first | second << 2: (0,0) (1,1) (2,2) (3,3) and (2,0) are invalid, (1,2) is valid
@pytest.mark.parametrize("nibble", [0x0, 0x5, 0xA, 0xF, 0x2, 0x9])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
# K=28: 7 groups, the last a low nibble; K=68: 17 groups, the AVX-512 GEMV's 32-column steps
@pytest.mark.parametrize("K", [28, 68])
def test_semi24_metadata_first_not_below_second(entry, N, nibble, where, K):
    values, meta, offsets, M, K = semi24_parts(K=K)
    p0, p1 = nibble & 3, nibble >> 2
    g = {"first": 0, "middle": 3, "last": K // 4 - 1}[where]
    byte, shift = g // 2, 4 * (g % 2)
    meta[2, byte] = (int(meta[2, byte]) & ~(0xF << shift) | (nibble << shift)) & 0xFF
    B = torch.ones(K, N)
    if p0 < p1:  # a valid nibble must be accepted
        entry(values, meta, offsets, M, K, "2:4", B)
        return
    with pytest.raises(ValueError, match=rf"2:4 indices row 2, group {g}: positions "
                                         rf"\({p0}, {p1}\) must be strictly increasing"):
        entry(values, meta, offsets, M, K, "2:4", B)


def _isas():
    C = _extension._C
    have = [isa for isa, ok in (("avx2", C.cpu_has_avx2()), ("avx512", C.cpu_has_avx512())) if ok]
    return ["portable"] + have


@pytest.mark.parametrize("N", [1, 4, 10, 16, 64])  # GEMV, small N, its chunks, panels
# Row bytes (K / 8): 48 (one 32-byte step and an overlapping last one; the GEMV's 4-row tiles
# check 192 bytes as one range), 33, 20 (16-byte steps), 9 (bytewise); K = 388: an odd group
# count (each row on its own, its last byte's low nibble alone).
@pytest.mark.parametrize("K", [384, 264, 160, 72, 388])
def test_semi24_metadata_checked_at_every_byte(cpu_isa_env, N, K):
    """A bad nibble anywhere in a block of rows is found by every ISA's check, whichever byte of
    a vector step (or of the overlap of the last two) it sits in; an untouched copy runs."""
    M = 9
    values, meta, offsets, _, _ = semi24_parts(M=M, K=K)
    B = torch.randn(K, N)
    G = (K + 3) // 4
    gen = torch.Generator().manual_seed(K * 100 + N)
    for isa in _isas():
        cpu_isa_env(isa)
        torch.testing.assert_close(fast_path(values, meta, offsets, M, K, "2:4", B),
                                   sk.formats.from_parts("2:4", values, meta, offsets,
                                                         (M, K)).to_dense() @ B,
                                   atol=1e-4, rtol=1e-4)
        rows = [0, 4, M - 1]
        groups = sorted({0, 1, G - 1, G - 2, *torch.randint(0, G, (4,), generator=gen).tolist()})
        for row in rows:
            for g in groups:
                bad = meta.clone()
                byte, shift = g // 2, 4 * (g % 2)
                bad[row, byte] = (int(bad[row, byte]) & ~(0xF << shift) | (0x6 << shift)) & 0xFF
                with pytest.raises(ValueError, match=rf"2:4 indices row {row}, group {g}: "
                                                     rf"positions \(2, 1\) must be strictly"):
                    fast_path(values, bad, offsets, M, K, "2:4", B)


def test_isa_switch_rejects_unknown_values(cpu_isa_env):
    values, rows, offsets, M, K = csc_parts()
    cpu_isa_env("sse9")
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_ISA='sse9'.*'portable', 'avx2', 'avx512', 'auto'"):
        fast_path(values, rows, offsets, M, K, "csc", torch.ones(K, 1))


def test_spmm_cpu_rejects_mismatched_format_tensors():
    values, rows, offsets, M, K = csc_parts()
    with pytest.raises(RuntimeError, match=r"_spmm_cpu: format tensors do not match layout 'csc'"):
        cpu_op(values, rows, offsets[:-1], M, K, "csc", torch.ones(K, 2))
    with pytest.raises(RuntimeError, match=r"_spmm_cpu: B has shape"):
        cpu_op(values, rows, offsets, M, K, "csc", torch.ones(K + 1, 2))
    out = torch.empty(M + 1, 2)
    with pytest.raises(RuntimeError, match=r"_spmm_cpu: out has shape"):
        torch.ops.sparsekern._spmm_cpu(values, rows, offsets, M, K, "csc", torch.ones(K, 2), None,
                                       out)
    with pytest.raises(RuntimeError, match=r"_spmm_cpu: no CPU kernel for layout 'coo'"):
        cpu_op(values, rows, offsets, M, K, "coo", torch.ones(K, 2))


def test_bad_format_is_rejected_again_after_a_good_call():
    """The per-weight CSC cache never turns a bad tensor into a trusted one."""
    values, rows, offsets, M, K = csc_parts()
    fast_path(values, rows, offsets, M, K, "csc", torch.ones(K, 3))
    rows[1] = M  # in place: bumps the version counter, so the cached facts are stale
    for N in (1, 3):
        with pytest.raises(ValueError, match=rf"csc row indices\[1\]={M} is out of range"):
            fast_path(values, rows, offsets, M, K, "csc", torch.ones(K, N))


def _raises_like_reference(fn):
    """fn() raises the same ValueError on the default path as on the reference backend."""
    from sparsekern.backends import use_backend
    with use_backend("reference"):
        with pytest.raises(ValueError) as ref:
            fn()
    with pytest.raises(ValueError) as got:
        fn()
    assert str(got.value) == str(ref.value)
    return str(got.value)


I16, I32 = torch.int16, torch.int32
# Malformed formats whose product is an empty sum (K == 0; M == 0 for the transposed product):
# no kernel reads them, and they were returned zeros (or the bias) where the reference raised
# (found by a fuzz hunt). An empty output is never checked, on either path.
# (M, K, layout, values, indices, offsets, message, op)
UNRUN = [
    (4, 0, "csc", torch.ones(2), torch.tensor([0, 9], dtype=I16), torch.tensor([7], dtype=I32),
     "csc offsets must start at 0", "spmm"),
    (16, 0, "sell", torch.ones(1), torch.empty(0, 16, dtype=torch.uint8),
     torch.tensor([[-1, -1]], dtype=I32), "sell offsets[:, 0] must start at 0", "spmm"),
    (8, 0, "bsr", torch.ones(0, 2, 2), torch.empty(0, dtype=I32),
     torch.tensor([0, 5, -1, 0, 0], dtype=I32), "bsr offsets must not decrease", "spmm"),
    (8, 0, "bsr", torch.ones(1, 2, 2), torch.tensor([0], dtype=I32),
     torch.tensor([0, 1, 1, 1, 1], dtype=I32), "out of range", "spmm"),
    (0, 3, "csc", torch.ones(0), torch.empty(0, dtype=I16), torch.tensor([0, 0, -1, 0], dtype=I32),
     "csc offsets must not decrease", "spmm_transposed"),
    (0, 3, "csc", torch.ones(1), torch.tensor([0], dtype=I16), torch.tensor([0, 1, 1, 1], dtype=I32),
     "out of range", "spmm_transposed"),
    (0, 4, "bsr", torch.ones(0, 2, 2), torch.empty(0, dtype=I32), torch.tensor([3], dtype=I32),
     "bsr offsets must start at 0", "spmm_transposed"),
]


@pytest.mark.parametrize("M, K, layout, v, i, o, msg, op", UNRUN)
def test_a_malformed_format_of_an_empty_sum_is_rejected(M, K, layout, v, i, o, msg, op):
    if op == "spmm":
        call = lambda: torch.ops.sparsekern.spmm(v, i, o, M, K, layout, torch.randn(K, 3))
    else:
        call = lambda: torch.ops.sparsekern.spmm_transposed(v, i, o, M, K, layout,
                                                             torch.randn(M, 3))
    assert msg in _raises_like_reference(call)


def test_a_valid_format_of_an_empty_sum_still_gives_the_bias():
    A = sk.to_sparse(torch.zeros(5, 0), layout="csc")
    bias = torch.randn(5)
    out = torch.ops.sparsekern.spmm(A.values, A.indices, A.offsets, 5, 0, "csc",
                                    torch.randn(0, 3), bias)
    torch.testing.assert_close(out, bias[:, None].expand(5, 3))
    E = sk.to_sparse(torch.zeros(0, 4), layout="csc")
    T = torch.ops.sparsekern.spmm_transposed(E.values, E.indices, E.offsets, 0, 4, "csc",
                                             torch.randn(0, 3))
    torch.testing.assert_close(T, torch.zeros(4, 3))
