"""64-bit index arithmetic of the Triton kernels (offsets past 2^31 elements).

Triton's interpreter wraps 32-bit integer arithmetic as a GPU does, so a product formed in
int32 where the kernel runs with 64-bit offsets (IDX64) reads or writes 2^32 elements away
from the right place. The big offsets come from views deep inside a lazily allocated
storage (8 GiB of address space; only the pages written are ever touched): a stride of
2^30 puts row/column 2 at 2^31 elements from the view's first element, and the wrapped
int32 offset lands at the start of the storage, where a sentinel is planted. On CUDA the
same tests allocate that storage for real (8 GiB).

Sizes near 2^31 (whole kernels far too long to run here) are checked at the launch: they
must switch the kernels to 64-bit offsets. The split-K bounds are checked with a probe
kernel calling the kernels' own split_range on the values a huge BSR block row gives.
"""
import pytest
import torch
import triton
import triton.language as tl

import sparsekern as sk
from sparsekern.backends import use_backend
from sparsekern.triton import configs
from sparsekern.triton.tiles import split_range
from tests.triton.launch import launch_into

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
LAYOUTS = ["2:4", "csc", "bsr"]
DT = torch.float16
S = 2**30          # a stride that fits int32 (Triton passes it as i32)
OFF = 2**31        # the view's storage offset: the wrapped address stays inside the storage
WRAP = 1 << 20     # storage elements [0, WRAP) hold the sentinel (where wrapped offsets land)

#: Interpreter on CPU, or the compiled kernels on CUDA (gpu-marked: skipped without one).
needs_kernels = pytest.mark.usefixtures("triton_available")


def _lazy_view(shape, stride, sentinel):
    """A [shape] view at storage offset OFF with ``stride``; storage [0, WRAP) = sentinel."""
    n_el = OFF + sum((s - 1) * st for s, st in zip(shape, stride)) + 1
    if HAS_CUDA and torch.cuda.mem_get_info()[0] < 2 * n_el + (1 << 30):
        pytest.skip(f"needs {2 * n_el / 2**30:.1f} GiB of free GPU memory")
    store = torch.empty(n_el, dtype=DT, device=DEV)  # CPU: lazily allocated, pages untouched
    store[:WRAP].fill_(sentinel)
    return store.as_strided(shape, stride, OFF), store


def _weight(M, K, cols):
    """[M, K] fp16 weight, nonzero exactly on columns ``cols`` (every stored entry nonzero:
    a (16, 1) BSR block per column, both kept values of a 2:4 group)."""
    g = torch.Generator().manual_seed(0)
    W = torch.zeros(M, K, dtype=DT)
    for c in cols:
        W[:, c] = (torch.rand(M, generator=g) + 0.5).to(DT)
    return W


def _pack(W, layout):
    kw = dict(blocksize=(16, 1)) if layout == "bsr" else {}
    return sk.to_sparse(W.to(DEV), layout, **kw)


def _reference(W, B, bias=None):
    """float64 sum over the stored entries of W (its nonzeros) only: an unstored entry
    never meets B's NaN/Inf (the op's contract)."""
    W, B = W.double().cpu(), B.double().cpu()
    prod = W[:, :, None] * B[None, :, :]
    out = torch.where((W != 0)[:, :, None], prod, torch.zeros_like(prod)).sum(1)
    return out if bias is None else out + bias.double().cpu()[:, None]


def _check(out, ref):
    torch.testing.assert_close(out.double().cpu(), ref, rtol=2e-3, atol=2e-3, equal_nan=True)


def _spmm(A, B):
    with use_backend("triton"):
        return torch.ops.sparsekern.spmm(*A.op_args(), B, None)


# B read with 64-bit offsets: row index times stride_bk, column index times stride_bn.

@needs_kernels
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "inf"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_b_row_stride_past_2_31(layout, nonfinite):
    """B row 2 at 2^31 elements (stride_bk = 2^30): kk * stride_bk (2:4 main loop) and
    k * stride_bk (2:4 NaN/Inf pass, taken with an Inf in row 2) in int64."""
    M, K, N = 16, 3, 1
    W = _weight(M, K, cols=(0, 2))       # 2:4: columns 0 and 2 of the padded group kept
    B, store = _lazy_view((K, N), (S, 1), sentinel=1000.0)
    B.copy_((torch.arange(1, K * N + 1, dtype=torch.float32).reshape(K, N) / 8).to(DT))
    if nonfinite:
        B[2, 0] = float("inf")
    A = _pack(W, layout)
    assert configs.needs_int64(B)
    _check(_spmm(A, B), _reference(W, B))


@needs_kernels
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_b_column_stride_past_2_31(layout, nonfinite):
    """B column 2 at 2^31 elements (stride_bn = 2^30, as x.t() of a linear layer with
    in_features * tokens >= 2^31): offs_n * stride_bn in int64 in the main loops and in
    the NaN/Inf passes (a NaN in column 2)."""
    M, K, N = 16, 4, 3
    W = _weight(M, K, cols=(1, 3))
    B, store = _lazy_view((K, N), (1, S), sentinel=1000.0)
    B.copy_((torch.arange(1, K * N + 1, dtype=torch.float32).reshape(K, N) / 8).to(DT))
    if nonfinite:
        B[1, 2] = float("nan")
    A = _pack(W, layout)
    _check(_spmm(A, B), _reference(W, B))


# out written with 64-bit offsets: store_tile, and the split-K reduction.

@needs_kernels
@pytest.mark.parametrize("split_k", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_column_stride_past_2_31(layout, split_k):
    """Column-major out whose column 2 is 2^31 elements in (stride_on = 2^30): every
    element lands in place and nothing is written 2^32 elements early (the sentinel)."""
    M, K, N = 16, 4, 3
    W = _weight(M, K, cols=(1, 3))
    g = torch.Generator().manual_seed(1)
    B = (torch.rand(K, N, generator=g) - 0.5).to(DT).to(DEV)
    bias = (torch.rand(M, generator=g) - 0.5).to(DT).to(DEV)
    out, store = _lazy_view((M, N), (1, S), sentinel=-7.0)
    out.fill_(float("nan"))
    assert configs.needs_int64(out)
    A = _pack(W, layout)
    launch_into(A, layout, M, K, B, bias, out, split_k)
    assert bool((store[:WRAP] == -7.0).all()), "written 2^32 elements before out's column"
    _check(out, _reference(W, B, bias))


# split_range: the split-K bounds of a block row with more than 2^31 / SPLIT_K blocks.

@triton.jit
def _split_probe(off_ptr, out_ptr, SPLIT_K: tl.constexpr, UNIT: tl.constexpr):
    pid_s = tl.program_id(0)
    start = tl.load(off_ptr)          # as the kernels load their offsets (int32 for BSR)
    end = tl.load(off_ptr + 1)
    lo, hi = split_range(start, end, pid_s, SPLIT_K, UNIT)
    tl.store(out_ptr + 2 * pid_s, lo)
    tl.store(out_ptr + 2 * pid_s + 1, hi)


@needs_kernels
@pytest.mark.parametrize("lo,hi,unit,dtype", [
    (0, 2**27 - 1, 1, torch.int32),          # units * 16 < 2^31: always fine
    (0, 2**27 + 5, 1, torch.int32),          # the first counts past 2^31 / 16
    (0, 2**29, 1, torch.int32),
    (0, 2**31 - 1, 1, torch.int32),          # the most an int32 offsets tensor holds
    (2**30, 2**31 - 1, 1, torch.int32),      # a late block row
    (16, 16 + 16 * (2**27 + 3), 16, torch.int64),  # CSC strips: ALIGN = 16, int64 pointers
])
def test_split_range_of_huge_block_rows(lo, hi, unit, dtype):
    split = configs.MAX_SPLIT_K
    offs = torch.tensor([lo, hi], dtype=dtype, device=DEV)
    out = torch.zeros(2 * split, dtype=torch.int64, device=DEV)
    _split_probe[(split,)](offs, out, SPLIT_K=split, UNIT=unit)
    units = (hi - lo) // unit
    want = [[lo + units * p // split * unit, lo + units * (p + 1) // split * unit]
            for p in range(split)]
    assert out.view(split, 2).tolist() == want


# Sizes near 2^31: tiles' padding rows/columns pass it, so the launch must use int64.

class _LaunchSpy:
    """Stands in for wrap_triton(kernel): records the launch's keyword arguments."""

    def __init__(self, seen):
        self.seen = seen

    def __call__(self, kernel):
        return self

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.seen.update(kwargs)


@pytest.mark.parametrize("big", ["M", "N", None])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sizes_near_2_31_launch_with_64_bit_offsets(monkeypatch, layout, big):
    """M or N within a tile of 2^31 (M = 2^31 - 8: BSR's 16-row block does not divide it,
    the last block row's padding rows pass 2^31) switches the kernel to IDX64 although no
    tensor's offsets do; ordinary sizes keep the 32-bit kernel. Nothing is launched (the
    tensors are stride-0 expansions of one element)."""
    from sparsekern.triton import bsr, csc, semi24
    M = 2**31 - 8 if big == "M" else 16
    N = 2**31 - 8 if big == "N" else 4
    K = 4
    B = torch.zeros(1, 1, dtype=DT).expand(K, N)
    out = torch.zeros(1, 1, dtype=DT).expand(M, N)
    seen = {}
    mod = {"bsr": bsr, "2:4": semi24, "csc": csc}[layout]
    monkeypatch.setattr(mod, "wrap_triton", _LaunchSpy(seen))
    if layout == "bsr":
        values = torch.zeros(1, 16, 1, dtype=DT)
        bsr.triton_bsr(values, torch.zeros(1, dtype=torch.int32),
                       torch.zeros(2, dtype=torch.int32), M, K, B, None, out, 1)
    elif layout == "2:4":
        values = torch.zeros(1, 2, dtype=DT).expand(M, 2)
        meta = torch.zeros(1, 1, dtype=torch.uint8).expand(M, 1)
        semi24.triton_semi24(values, meta, M, K, B, None, out, 1)
    else:
        n = 16
        csc.triton_csc(torch.zeros(n, dtype=DT), torch.zeros(n, dtype=torch.int16),
                       torch.zeros(n, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32),
                       M, K, B, None, out, 1)
    assert seen["IDX64"] is (big is not None)


# BSR.from_dense: the block count must fit the int32 offsets.

def test_bsr_refuses_more_blocks_than_int32_offsets_hold(monkeypatch):
    from sparsekern.formats import bsr as bsr_format
    with pytest.raises(ValueError, match=r"bsr would store 2147483648 blocks; at most "
                                         r"2147483647 fit its int32 offsets"):
        bsr_format.check_block_count(2**31)
    bsr_format.check_block_count(2**31 - 1)
    # from_dense checks the count before it gathers the blocks (limit lowered to 3).
    monkeypatch.setattr(bsr_format, "MAX_BLOCKS", 3)
    W = torch.ones(4, 4)
    with pytest.raises(ValueError, match=r"bsr would store 4 blocks; at most 3"):
        sk.to_sparse(W, "bsr", blocksize=(2, 2))
    W[:2, :2] = 0
    A = sk.to_sparse(W, "bsr", blocksize=(2, 2))
    assert A.offsets.tolist() == [0, 1, 3] and A.offsets.dtype == torch.int32


def test_needs_int64_sizes_within_a_tile_of_2_31():
    edge = configs.INT32_LIMIT - configs.TILE_REACH
    assert configs.needs_int64(sizes=(16, edge))
    assert not configs.needs_int64(torch.empty(4, 5), sizes=(16, edge - 1))
