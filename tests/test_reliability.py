"""Regression tests of issue 17: every reproducer of the reliability audit, plus a fuzz test.

Sizes that cannot be served are rejected with an error naming the argument (never a crash,
never a huge allocation); a B with zero strides is read correctly; weights rewritten after
first use (in place, through .data, through NumPy, by load_state_dict, under inference_mode)
give the new weights' result; the backward helper ops validate like spmm; double backward
works. Run by the sanitizer job (.ci/sanitize.sh) as well.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch

import sparsekern as sk
from sparsekern import formats
from sparsekern.backends import use_backend
from sparsekern.nn import SparseLinear

from .helpers import TOL, random_pattern_weight, rel_err

HAVE_C = sk._extension._C is not None
needs_c = pytest.mark.skipif(not HAVE_C, reason="sparsekern._C is not built")
LAYOUTS = ("2:4", "bsr", "csc")
BIG = 2**62


def _fmt(layout, M=24, K=40, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = random_pattern_weight(M, K, layout, blocksize=(4, 4), dtype=dtype, generator=g)
    bs = (4, 4) if layout == "bsr" else None
    return W, sk.to_sparse(W, layout=layout, blocksize=bs)


def _reference(A, B, bias=None):
    with use_backend("reference"):
        return sk.spmm(A, B, bias)


# ----------------------------------------------------------------------------- sizes

def test_bsr_huge_k_stride0_b_is_rejected_not_a_crash():
    # Reproducer 1: no stored block, K = 2^62, B expanded. Rejected where the shape is given.
    with pytest.raises(ValueError, match=r"M=4, K=4611686018427387904: sizes above 2\^31 - 1"):
        formats.from_parts("bsr", torch.empty(0, 1, 1), torch.empty(0, dtype=torch.int32),
                           torch.zeros(5, dtype=torch.int32), (4, BIG))


@pytest.mark.parametrize("K", [2**60, 2**31])
def test_raw_op_huge_k_stride0_b_is_rejected(K):
    B = torch.ones(1, 1).expand(K, 2)
    with pytest.raises(ValueError, match=rf"M=4, K={K}: sizes above 2\^31 - 1 = 2147483647 are "
                                         r"not served"):
        torch.ops.sparsekern.spmm(torch.empty(0, 1, 1), torch.empty(0, dtype=torch.int32),
                                  torch.zeros(5, dtype=torch.int32), 4, K, "bsr", B, None)


@pytest.mark.parametrize("op", ["spmm_transposed", "spmm_sampled_dot"])
def test_backward_ops_reject_huge_k(op):
    v, i, o = torch.empty(0, 1, 1), torch.empty(0, dtype=torch.int32), torch.zeros(5, dtype=torch.int32)
    G = torch.ones(4, 2)
    args = (G,) if op == "spmm_transposed" else (G, torch.ones(1, 1).expand(2**40, 2))
    with pytest.raises(ValueError, match=r"K=1099511627776: sizes above 2\^31 - 1"):
        getattr(torch.ops.sparsekern, op)(v, i, o, 4, 2**40, "bsr", *args)


@needs_c
def test_cpu_glue_names_sizes_it_cannot_serve():
    # The C++ glue's own check (reached directly through _spmm_cpu).
    v, i, o = torch.empty(0, 1, 1), torch.empty(0, dtype=torch.int32), torch.zeros(5, dtype=torch.int32)
    out = torch.empty(4, 2)
    with pytest.raises(ValueError, match=r"sparsekern.spmm: M=4, K=1152921504606846976 exceed the "
                                         r"largest size the CPU kernels serve \(2147483647"):
        torch.ops.sparsekern._spmm_cpu(v, i, o, 4, 2**60, "bsr", torch.ones(1, 1).expand(2**60, 2),
                                       None, out)
    wide = torch.empty(4, 1).expand(4, 2**31)
    with pytest.raises(ValueError, match=r"B has N=2147483648 columns; the CPU kernels serve at "
                                         r"most 2147483647"):
        torch.ops.sparsekern._spmm_cpu(v, i, o, 4, 8, "bsr", torch.ones(1, 1).expand(8, 2**31),
                                       None, wide)
    vb = torch.empty(0, 1, 2**31)
    with pytest.raises(ValueError, match=r"values has shape \[0, 1, 2147483648\]; block sizes "
                                         r"above 2147483647"):
        torch.ops.sparsekern._spmm_cpu(vb, i, o, 4, 8, "bsr", torch.ones(8, 2), None, out)


@needs_c
@pytest.mark.parametrize("N", [1, 2, 40])
def test_scratch_beyond_limit_is_an_error_not_an_allocation(N):
    # K = 2^31 - 1 is a servable size, but packing a stride-0 B of that many rows would need
    # more scratch than the kernels may ask for: a clean error naming K and N.
    K = 2**31 - 1
    A = formats.from_parts("bsr", torch.empty(0, 1, 1), torch.empty(0, dtype=torch.int32),
                           torch.zeros(5, dtype=torch.int32), (4, K))
    B = torch.ones(1, 1).expand(K, N)
    with pytest.raises(RuntimeError, match=rf"out of memory for a scratch buffer \(M=4, K={K}, "
                                           rf"N={N}; buffers above 4294967296 bytes are refused"):
        sk.spmm(A, B)


# ----------------------------------------------------------------------------- stride-0 B

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["rows", "cols", "both", "gemv"])
def test_stride0_b_is_read_correctly(layout, kind):
    W, A = _fmt(layout, M=24, K=40)
    if kind == "rows":    # every row of B the same: strides (0, 1)
        B = torch.randn(1, 7).expand(40, 7)
    elif kind == "cols":  # every column the same: strides (1, 0)
        B = torch.randn(40, 1).expand(40, 7)
    elif kind == "both":
        B = torch.randn(1, 1).expand(40, 7)
    else:
        B = torch.randn(1).expand(40)
    ref = W.double() @ B.double()
    out = sk.spmm(A, B)
    assert rel_err(out, ref) < TOL[torch.float32]
    assert rel_err(_reference(A, B), ref) < TOL[torch.float32]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stride0_half_b_is_read_correctly(layout, dtype):
    # Half-precision activations are converted to float32 for the CPU kernels: an expanded B
    # is converted at its stored size and expanded again.
    W, A = _fmt(layout, M=24, K=40)
    A = A.to(dtype)
    B = torch.randn(40, 1).to(dtype).expand(40, 7)
    ref = A.to_dense().double() @ B.double()
    out = sk.spmm(A, B)
    assert out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


@needs_c
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
def test_stride0_half_b_is_not_materialized_in_float32():
    # One stored column expanded to 2^24 columns of 32 rows: a float32 copy of the view would
    # take 2 GB; the call must only cost its output (32 MB of bf16, 64 MB of float32).
    code = (
        "import torch, sparsekern as sk\n"
        "W = torch.zeros(1, 32); W[0, ::4] = 1.0\n"
        "A = sk.to_sparse(W.bfloat16(), layout='csc')\n"
        "B = torch.ones(32, 1, dtype=torch.bfloat16).expand(32, 2**24)\n"
        "y = sk.spmm(A, B)\n"
        "assert y.shape == (1, 2**24) and float(y[0, 0]) == 8.0 and float(y[0, -1]) == 8.0\n"
        # VmHWM: this process's own peak (ru_maxrss would count the forked parent's pages)
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]) // 1024)\n")
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.split()[-1])
    assert peak_mb < 1500, f"peak RSS {peak_mb} MB: the expanded B was materialized"


# ----------------------------------------------------------------------------- stale caches

def _csc_pair(M=48, K=64, seed=0):
    W1, A = _fmt("csc", M, K, seed=seed)
    W2 = W1.clone()
    W2[W1 != 0] = torch.randn(int((W1 != 0).sum()), generator=torch.Generator().manual_seed(9))
    return W1, W2, A


def _new_values(A, W2):
    return sk.to_sparse(W2, "csc").values


@pytest.mark.parametrize("N", [1, 2, 33])
@pytest.mark.parametrize("how", ["data", "numpy", "copy_", "inplace_no_grad", "set_data"])
def test_csc_values_rewritten_after_first_use(N, how):
    W1, W2, A = _csc_pair()
    B = torch.randn(64, N)
    assert rel_err(sk.spmm(A, B), W1.double() @ B.double()) < TOL[torch.float32]
    new = _new_values(A, W2)
    if how == "data":
        A.values.data[:] = new
    elif how == "numpy":
        A.values.numpy()[:] = new.numpy()
    elif how == "copy_":
        A.values.copy_(new)
    elif how == "inplace_no_grad":
        with torch.no_grad():
            A.values.mul_(0).add_(new)
    else:
        A.values.data = new.clone()
    assert rel_err(sk.spmm(A, B), W2.double() @ B.double()) < TOL[torch.float32]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_csc_one_entry_rewritten_is_seen_in_every_part(where, threads):
    """The cached repack's check compares megabytes in parts on several threads: one value
    or one row index changed anywhere (first, middle or last part) is seen."""
    M, K, N = 2048, 2048, 4
    g = torch.Generator().manual_seed(5)
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < 0.5)
    A = sk.to_sparse(W, "csc")  # ~2M entries: 8 MB of values, 4 MB of int16 rows
    assert A.values.numel() * 4 > 6 * 2**20 and A.indices.dtype == torch.int16
    B = torch.randn(K, N, generator=g)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sk.spmm(A, B)  # builds the cached repack
        i = {"first": 3, "middle": A.values.numel() // 2, "last": A.values.numel() - 2}[where]
        A.values.numpy()[i] += 100.0
        W2 = A.to_dense()
        assert rel_err(sk.spmm(A, B), W2.double() @ B.double()) < TOL[torch.float32]
        # The entry's row moved to a free row of the same column (rows stay distinct).
        col = int(torch.searchsorted(A.offsets, torch.tensor(i), right=True)) - 1
        used = set(A.indices[A.offsets[col]:A.offsets[col + 1]].tolist())
        A.indices.numpy()[i] = next(r for r in range(M) if r not in used)
        W3 = A.to_dense()
        assert not torch.equal(W3, W2)
        assert rel_err(sk.spmm(A, B), W3.double() @ B.double()) < TOL[torch.float32]
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("N", [1, 8])
def test_csc_indices_rewritten_after_first_use(N):
    # Same number of entries per column, other rows: the result follows the live indices,
    # and an index made invalid is an error, not a read out of bounds.
    W, A = _fmt("csc", 32, 16, seed=3)
    B = torch.randn(16, N)
    sk.spmm(A, B)
    rows = A.indices.clone()
    A.indices.numpy()[:] = ((rows.long() + 1) % 32).to(rows.dtype).numpy()
    # Rows shifted by one (mod 32) in every column: still sorted except where it wrapped,
    # which the kernels do not require.
    W2 = torch.zeros_like(W)
    cols = A.column_of_entries()
    W2[A.indices.long(), cols] = A.values
    assert rel_err(sk.spmm(A, B), W2.double() @ B.double()) < TOL[torch.float32]
    A.indices.numpy()[0] = 32
    with pytest.raises(ValueError, match=r"a row index in indices is out of range|"
                                         r"csc row indices\[0\]=32 is out of range"):
        sk.spmm(A, B)


@pytest.mark.parametrize("N", [1, 4])
def test_load_state_dict_under_inference_mode(N):
    # Reproducer 2: a serving process builds the layer under inference_mode, then loads new
    # weights with the same pattern; inference tensors have no version counter.
    W1, W2, _ = _csc_pair(M=64, K=64)
    with torch.inference_mode():
        lin1 = torch.nn.Linear(64, 64)
        lin1.weight.copy_(W1)
        layer = SparseLinear.from_dense(lin1, layout="csc")
        x = torch.randn(N, 64)
        y1 = layer(x)
        lin2 = torch.nn.Linear(64, 64)
        lin2.weight.copy_(W2)
        lin2.bias.copy_(lin1.bias)
        layer.load_state_dict(SparseLinear.from_dense(lin2, layout="csc").state_dict())
        y2 = layer(x)
    assert rel_err(y1, x.double() @ W1.double().T + lin1.bias.double()) < TOL[torch.float32]
    assert rel_err(y2, x.double() @ W2.double().T + lin1.bias.double()) < TOL[torch.float32]


def test_gemv_zero_activation_skip_sees_new_infinities():
    # The "all finite" fact behind skipping zero activations is not cached: a value made
    # Inf after first use turns its row into NaN when its activation is 0 (Inf * 0).
    W, A = _fmt("csc", 16, 32, seed=5)
    B = torch.randn(32, 1)
    col = int(torch.nonzero(A.offsets[1:] - A.offsets[:-1])[0])
    B[col] = 0.0
    assert torch.isfinite(sk.spmm(A, B)).all()
    pos = int(A.offsets[col])
    row = int(A.indices[pos])
    A.values.numpy()[pos] = float("inf")
    out = sk.spmm(A, B)
    assert torch.isnan(out[row]).all()
    ref = _reference(A, B)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))


@needs_c
def test_csc_cache_serves_unchanged_weights_and_dies_with_them():
    C = sk._extension._C
    C.csc_cache_clear()
    W, A = _fmt("csc", 32, 32, seed=1)
    B = torch.randn(32, 4)
    y = sk.spmm(A, B)
    assert C.csc_cache_info()[0] == 1
    assert torch.equal(sk.spmm(A, B), y)
    assert C.csc_cache_info()[0] == 1
    del A
    assert C.csc_cache_info() == (0, 0)


# ----------------------------------------------------------------------------- helper ops

def _op_args(layout):
    W, A = _fmt(layout, 16, 24, seed=2)
    return A, list(A.op_args())


def _bad_index(layout, args):
    if layout == "csc":
        args[1] = args[1].clone()
        args[1][0] = -1
    elif layout == "bsr":
        args[1] = args[1].clone()
        args[1][0] = 1000
    else:
        args[1] = args[1].clone()
        args[1][0, 0] = 0x33  # first position == second
    return args


_INDEX_MSG = {
    "csc": r"a row index in indices is out of range|csc row indices\[0\]=-1 is out of range",
    "bsr": r"a block-column index in indices is out of range|"
           r"bsr block-column indices\[0\]=1000 is out of range",
    "2:4": r"positions .* must be strictly increasing|not strictly increasing",
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", ["spmm", "spmm_transposed", "spmm_sampled_dot"])
@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("N", [3, 40])  # 40: 2:4's backward runs as dense GEMMs (N >= 32)
def test_every_op_rejects_a_bad_index(layout, op, backend, N):
    A, args = _op_args(layout)
    M, K = A.shape
    dense = {"spmm": (torch.randn(K, N), None), "spmm_transposed": (torch.randn(M, N),),
             "spmm_sampled_dot": (torch.randn(M, N), torch.randn(K, N))}[op]
    args = _bad_index(layout, args)
    fn = getattr(torch.ops.sparsekern, op)
    if backend is None:
        with pytest.raises(ValueError, match=_INDEX_MSG[layout]):
            fn(*args, *dense)
    else:
        with use_backend(backend), pytest.raises(ValueError, match=_INDEX_MSG[layout]):
            fn(*args, *dense)


@pytest.mark.parametrize("op", ["spmm_transposed", "spmm_sampled_dot"])
def test_helper_ops_reject_bad_arguments_like_spmm(op):
    A, args = _op_args("csc")
    M, K = A.shape
    fn = getattr(torch.ops.sparsekern, op)
    G, B = torch.randn(M, 3), torch.randn(K, 3)
    dense = (G,) if op == "spmm_transposed" else (G, B)
    bad_layout = args[:5] + ["coo"]
    with pytest.raises(ValueError, match=r"layout must be one of '1:4', '2:4', 'bsr', 'csc', 'sell'; got 'coo'"):
        fn(*bad_layout, *dense)
    bad_off = list(args)
    bad_off[2] = args[2][:-1]
    with pytest.raises(ValueError, match=r"csc offsets has shape \[24\] .*expected int32 or int64 "
                                         r"of shape \[K \+ 1\] = \[25\]"):
        fn(*bad_off, *dense)
    with pytest.raises(ValueError, match=r"G has shape \[15, 3\] but A needs M=16 rows"):
        fn(*args, G[:15], *dense[1:])
    with pytest.raises(TypeError, match=r"G has dtype torch.float64 but the sparse values have "
                                        r"dtype torch.float32"):
        fn(*args, G.double(), *dense[1:])
    if op == "spmm_sampled_dot":
        with pytest.raises(ValueError, match=r"B has shape \[23, 3\] but A needs K=24 rows"):
            fn(*args, G, B[:23])
        with pytest.raises(ValueError, match=r"G has shape \[16, 3\] and B has shape \[24, 2\]; "
                                             r"expected the same number of columns N"):
            fn(*args, G, B[:, :2])


# ----------------------------------------------------------------------------- autograd

@pytest.mark.parametrize("layout", LAYOUTS)
def test_double_backward(layout):
    W, A = _fmt(layout, 8, 12, dtype=torch.float64, seed=4)
    values = A.values.clone().requires_grad_(True)
    B = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, dtype=torch.float64, requires_grad=True)

    def f(v, b, c):
        return torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 8, 12, layout, b, c)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "autograd kernel was not registered" warning
        assert torch.autograd.gradgradcheck(f, (values, B, bias))


# ----------------------------------------------------------------------------- env

def test_backend_env_is_not_read_per_call(monkeypatch):
    from sparsekern import backends

    W, A = _fmt("csc")
    B = torch.randn(40, 2)
    monkeypatch.setenv("SPARSEKERN_BACKEND", "triton")  # would fail on CPU if it were read
    try:
        assert rel_err(sk.spmm(A, B), W.double() @ B.double()) < TOL[torch.float32]
        assert backends.forced_backend() is None
    finally:
        monkeypatch.delenv("SPARSEKERN_BACKEND")


def _one_of_four(seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(64, 64, generator=g).view(64, 16, 4)
    keep = W.abs().argmax(-1, keepdim=True)
    return (W * torch.zeros_like(W).scatter_(-1, keep, 1)).view(64, 64)


def test_repack_cache_sees_numpy_writes_to_a_served_as_layout():
    # 1:4 runs through a cached 2:4 copy (formats.cached_repack): a write the version counter
    # does not see must rebuild it, never serve the old weights.
    W1, W2 = _one_of_four(1), _one_of_four(2)
    x = torch.randn(64, 3)
    A = sk.to_sparse(W1, layout="1:4")
    torch.testing.assert_close(sk.spmm(A, x), W1 @ x)
    B = sk.to_sparse(W2, layout="1:4")
    A.values.numpy()[:] = B.values.numpy()
    A.indices.numpy()[:] = B.indices.numpy()
    torch.testing.assert_close(sk.spmm(A, x), W2 @ x)


def test_cached_repack_rebuilds_on_unversioned_writes_and_hits_otherwise():
    from sparsekern.formats.base import cached_repack
    v = torch.tensor([1.0, float("nan"), 3.0])
    calls = []

    def build():
        calls.append(1)
        return v.clone()
    cached_repack(v, "k", (), build)
    cached_repack(v, "k", (), build)          # same bytes (NaN included): a hit
    assert len(calls) == 1
    v.data[0] = 5.0                           # no version bump
    assert cached_repack(v, "k", (), build)[0].item() == 5.0
    assert len(calls) == 2


def test_cached_repack_checks_each_tensor_once_per_call_and_never_serves_stale(monkeypatch):
    # Inside one op call (one_check_per_call) a validation and a repack of the same weight
    # share one byte compare (one device sync on a GPU); the next call compares again.
    from sparsekern.formats import base
    v, idx = torch.randn(10), torch.arange(7, dtype=torch.int16)
    compares = []
    real = base._all_same_bytes
    monkeypatch.setattr(base, "_all_same_bytes", lambda pairs: compares.append(len(pairs))
                        or real(pairs))
    builds = []

    def build(tag):
        return lambda: builds.append(tag) or (v.clone(), idx.clone())
    for _ in range(2):
        with base.one_check_per_call():
            base.cached_repack(v, "a", (idx,), build("a"))
            base.cached_repack(v, "b", (idx,), build("b"))
    assert builds == ["a", "b"] and compares == [2]   # 2nd call: one compare, both hits
    v.data[3] = 99.0                                  # a write the version counter misses
    idx.data[0] = 5
    with base.one_check_per_call():
        got_a = base.cached_repack(v, "a", (idx,), build("a"))
        got_b = base.cached_repack(v, "b", (idx,), build("b"))
    assert builds == ["a", "b", "a", "b"] and compares == [2, 2]
    for got in (got_a, got_b):
        assert got[0][3].item() == 99.0 and got[1][0].item() == 5
    same = idx.clone()                                # another object, same bytes: a hit
    assert base.cached_repack(v, "a", (same,), build("a")) is got_a and len(builds) == 4
    other = torch.arange(7, dtype=torch.int16)        # other bytes: rebuilt, not served
    assert base.cached_repack(v, "a", (other,), build("a"))[1] is not got_a[1]
    assert builds[-1] == "a" and len(builds) == 5


@pytest.mark.parametrize("memcmp", [True, False])
@pytest.mark.parametrize("n, offset", [(0, 0), (1, 0), (3, 1), (8, 0), (13, 2), (64, 5)])
def test_same_bytes_on_any_size_and_offset(n, offset, memcmp, monkeypatch):
    # On the CPU the compare is libc's memcmp (NumPy without it), never torch.equal, which
    # runs on torch's intra-op pool (10-25x slower, a whole scheduler slice when busy).
    from sparsekern.formats import base
    from sparsekern.formats.base import _all_same_bytes, _same_bytes
    if not memcmp:
        monkeypatch.setattr(base, "_MEMCMP", None)
    monkeypatch.setattr(torch, "equal", lambda *a: pytest.fail("torch.equal on the CPU"))
    base_t = torch.randn(n + offset + 1).to(torch.float16)
    a = base_t[offset:offset + n]
    b = a.clone()
    assert _same_bytes(a, b) and _all_same_bytes([(a, b)])
    if n:
        b[n // 2] = float("nan")
        a[n // 2] = float("nan")
        assert _same_bytes(a, b)                      # NaN equals itself, bit for bit
        b.view(torch.int16)[n - 1] ^= 1              # one bit
        assert not _same_bytes(a, b) and not _all_same_bytes([(a, b)])
    assert not _same_bytes(a, a.float())              # same values, other dtype


@pytest.mark.parametrize("write", ["copy_inference", "load_state_dict", "data"])
def test_served_1to4_copy_is_never_stale_after_any_write(write):
    # The 1:4 weight at N > 1 runs on a cached 2:4 copy; every kind of write to the format
    # tensors must reach the next call (N == 1 runs its own kernel and caches nothing).
    W1, W2 = _one_of_four(3), _one_of_four(4)
    A = sk.to_sparse(W1, layout="1:4")
    B = sk.to_sparse(W2, layout="1:4")
    X = torch.randn(64, 5)
    torch.testing.assert_close(sk.spmm(A, X), W1 @ X)
    if write == "copy_inference":
        with torch.inference_mode():
            A.values.copy_(B.values)
            A.indices.copy_(B.indices)
    elif write == "load_state_dict":
        holder = torch.nn.Module()
        holder.register_buffer("values", A.values)
        holder.register_buffer("indices", A.indices)
        holder.load_state_dict({"values": B.values.clone(), "indices": B.indices.clone()})
    else:
        A.values.data.copy_(B.values)
        A.indices.data.copy_(B.indices)
    for N in (5, 1):
        torch.testing.assert_close(sk.spmm(A, X[:, :N]), W2 @ X[:, :N])


def test_csc_repack_is_rebuilt_when_the_values_change_dtype_in_place():
    """`.data = values.view(torch.bfloat16)` keeps the bytes and the tensor object: the C++
    CSC repack built for float16 must not serve the bfloat16 values (it did: a wrong answer)."""
    g = torch.Generator().manual_seed(21)
    W = random_pattern_weight(16, 24, "csc", density=0.4, dtype=torch.float16, generator=g)
    A = sk.to_sparse(W, layout="csc")
    v = A.values.clone()
    B = torch.randn(24, 8, generator=g)
    torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 16, 24, "csc", B)  # caches the repack
    v.data = v.data.view(torch.bfloat16)
    y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 16, 24, "csc", B)
    with sk.use_backend("reference"):
        ref = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 16, 24, "csc", B)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_raw_ops_refuse_forward_mode_tangents_instead_of_dropping_them():
    """The raw op's autograd is reverse mode only: torch.func.jvp through it returned zero
    tangents (a wrong answer). It now raises; sparsekern.spmm keeps its forward formula."""
    import torch.autograd.forward_ad as fwAD
    g = torch.Generator().manual_seed(5)
    W = random_pattern_weight(5, 8, "csc", density=0.5, generator=g)
    A = sk.to_sparse(W, layout="csc")
    B, tB = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    msg = r"torch.ops.sparsekern.spmm has no forward-mode AD formula"
    with pytest.raises(RuntimeError, match=msg):
        torch.func.jvp(lambda b: torch.ops.sparsekern.spmm(*A.op_args(), b), (B,), (tB,))
    with pytest.raises(RuntimeError, match=msg), fwAD.dual_level():
        torch.ops.sparsekern.spmm(*A.op_args(), fwAD.make_dual(B, tB))
    _, t = torch.func.jvp(lambda b: sk.spmm(A, b), (B,), (tB,))
    torch.testing.assert_close(t, W @ tB)
    G, tG = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    with pytest.raises(RuntimeError, match=r"spmm_transposed has no forward-mode AD formula"), \
            fwAD.dual_level():
        torch.ops.sparsekern.spmm_transposed(*A.op_args(), fwAD.make_dual(G, tG))
    with pytest.raises(RuntimeError, match=r"spmm_sampled_dot has no forward-mode AD formula"), \
            fwAD.dual_level():
        torch.ops.sparsekern.spmm_sampled_dot(*A.op_args(), fwAD.make_dual(G, tG), B)


def test_raw_helper_ops_refuse_torch_func_jvp_tangents():
    """torch.func.jvp through the helper ops returned all-zero tangents without an error
    (torch.library.register_autograd's kernel steps below autograd when nothing requires
    grad, dropping the tangent). They now raise, whichever operand carries the tangent."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    W = random_pattern_weight(5, 8, "csc", density=0.5, generator=g)
    A = sk.to_sparse(W, layout="csc")
    v, rest = A.values, A.op_args()[1:]
    G, B = torch.randn(5, 3, generator=g), torch.randn(8, 3, generator=g)
    cases = [("spmm_transposed", lambda g_: torch.ops.sparsekern.spmm_transposed(v, *rest, g_), G),
             ("spmm_transposed", lambda v_: torch.ops.sparsekern.spmm_transposed(v_, *rest, G), v),
             ("spmm_sampled_dot", lambda g_: torch.ops.sparsekern.spmm_sampled_dot(v, *rest, g_, B),
              G),
             ("spmm_sampled_dot", lambda b_: torch.ops.sparsekern.spmm_sampled_dot(v, *rest, G, b_),
              B)]
    for op, fn, x in cases:
        with pytest.raises(RuntimeError, match=rf"sparsekern.{op} has no forward-mode AD formula"):
            torch.func.jvp(fn, (x,), (torch.randn_like(x),))


def test_raw_helper_ops_under_torch_func_grad_raise_and_autograd_still_works():
    """Under torch.func.grad the raw helper ops raise (no silent zeros); plain autograd,
    which double backward of spmm runs, still gives their formulas."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    W = random_pattern_weight(5, 8, "csc", density=0.5, generator=g)
    A = sk.to_sparse(W, layout="csc")
    v, rest = A.values, A.op_args()[1:]
    G, B = torch.randn(5, 3, generator=g), torch.randn(8, 3, generator=g)
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(lambda g_: torch.ops.sparsekern.spmm_transposed(v, *rest, g_).sum())(G)
    Gr, Br = G.clone().requires_grad_(), B.clone().requires_grad_()
    torch.ops.sparsekern.spmm_transposed(v, *rest, Gr).sum().backward()
    torch.testing.assert_close(Gr.grad, W @ torch.ones(8, 3))
    torch.ops.sparsekern.spmm_sampled_dot(v, *rest, G, Br).sum().backward()
    torch.testing.assert_close(Br.grad, (W != 0).to(G.dtype).t() @ G)
