"""The C++ pieces around the CPU kernels: the AutogradCPU kernel of sparsekern::spmm
(opcheck, gradients, torch.compile), the per-weight CSC cache (rebuilt on in-place
change, freed with the weight, works for inference tensors) and the backward kernels
(spmm_transposed, spmm_sampled_dot) against the reference."""
import gc

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
C = _extension._C

LAYOUTS = [("2:4", None), ("bsr", (8, 8)), ("bsr", (4, 1)), ("csc", None)]


def make(layout, block, M=32, K=48, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        W = W.reshape(M, K // 4, 4)
        W = W.scatter(-1, W.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.4)
    W = W.to(dtype)
    A = sk.to_sparse(W, layout=layout, blocksize=block) if layout == "bsr" else \
        sk.to_sparse(W, layout=layout)
    return W, A


ids = [lay if b is None else f"bsr{b[0]}x{b[1]}" for lay, b in LAYOUTS]


def test_autograd_kernel_is_registered_for_cpu():
    # The C++ node is registered for the Autograd alias key, which covers AutogradCPU.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("sparsekern::spmm", "Autograd")
    assert torch._C._dispatch_has_computed_kernel_for_dispatch_key("sparsekern::spmm",
                                                                   "AutogradCPU")


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
@pytest.mark.parametrize("N", [1, 5])
def test_opcheck(layout, block, N):
    W, A = make(layout, block)
    v = A.values.clone().requires_grad_()
    B = torch.randn(48, N, requires_grad=True)
    bias = torch.randn(32, requires_grad=True)
    torch.library.opcheck(torch.ops.sparsekern.spmm.default,
                          (v, A.indices, A.offsets, 32, 48, layout, B, bias))
    torch.library.opcheck(torch.ops.sparsekern.spmm.default,
                          (A.values, A.indices, A.offsets, 32, 48, layout, B.detach(), None))


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
@pytest.mark.parametrize("needs", ["all", "values", "B", "bias"])
def test_gradients_match_dense(layout, block, needs):
    W, A = make(layout, block)
    v = A.values.clone().requires_grad_(needs in ("all", "values"))
    B = torch.randn(48, 6, requires_grad=needs in ("all", "B"))
    bias = torch.randn(32, requires_grad=needs in ("all", "bias"))
    y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 32, 48, layout, B, bias)
    gy = torch.randn_like(y)
    y.backward(gy)
    v2 = A.values.clone().requires_grad_()
    B2 = B.detach().clone().requires_grad_()
    b2 = bias.detach().clone().requires_grad_()
    dense = sk.formats.from_parts(layout, v2, A.indices, A.offsets, (32, 48),
                                  validate=False).to_dense()
    ((dense @ B2 + b2[:, None]) * gy).sum().backward()
    for t, ref in ((v, v2), (B, B2), (bias, b2)):
        if t.requires_grad:
            torch.testing.assert_close(t.grad, ref.grad, rtol=1e-5, atol=1e-5)
        else:
            assert t.grad is None


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
def test_gradcheck_float64(layout, block):
    W, A = make(layout, block, M=12, K=16, dtype=torch.float64)
    v = A.values.clone().requires_grad_()
    B = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, B, b: torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 12, 16, layout, B, b),
        (v, B, bias))


def test_no_graph_without_grad():
    W, A = make("csc", None)
    B = torch.randn(48, 2)
    assert torch.ops.sparsekern.spmm(*A.op_args(), B).grad_fn is None
    v = A.values.clone().requires_grad_()
    with torch.no_grad():
        y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 32, 48, "csc", B)
    assert y.grad_fn is None and not y.requires_grad
    y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 32, 48, "csc", B)
    assert y.requires_grad and y.grad_fn is not None


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
@pytest.mark.parametrize("N", [7, 32, 40])  # 2:4 from N=32: the dense-GEMM branch (ops.cpp)
def test_compile_fullgraph_forward_and_backward(layout, block, N):
    torch._dynamo.reset()
    W, A = make(layout, block)
    v = A.values.clone().requires_grad_()
    B = torch.randn(48, N, requires_grad=True)

    def f(v, B):
        return torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 32, 48, layout, B).sum()

    eager = f(v, B)
    eager.backward()
    gv, gB = v.grad.clone(), B.grad.clone()
    v.grad = B.grad = None
    compiled = torch.compile(f, fullgraph=True)(v, B)
    compiled.backward()
    # Inductor may reorder the final sum (parallel reduction): float32 tolerance, not bits,
    # scaled by the sum of the magnitudes it adds (224 terms of ~5 cancel to ~0.01, so a
    # fixed 1e-5 failed on one draw of B by 1.5e-5).
    with torch.no_grad():
        terms = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 32, 48, layout, B).abs().sum()
    tol = 8 * torch.finfo(torch.float32).eps * float(terms)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=max(tol, 1e-5))
    torch.testing.assert_close(v.grad, gv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(B.grad, gB, rtol=1e-5, atol=1e-5)


def test_sparse_linear_trains_on_cpu():
    lin = torch.nn.Linear(48, 32)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) < 0.3)
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(5, 48)
    layer(x).square().sum().backward()
    assert layer.values.grad is not None and layer.bias.grad is not None


# ----------------------------------------------------------------------------- CSC cache

def test_csc_cache_follows_in_place_changes():
    W, A = make("csc", None)
    B = torch.randn(48, 9)
    y0 = torch.ops.sparsekern.spmm(*A.op_args(), B)
    A.values.mul_(2.0)  # the cached row repack no longer matches the live bytes: rebuilt
    y1 = torch.ops.sparsekern.spmm(*A.op_args(), B)
    torch.testing.assert_close(y1, 2 * y0)
    A.values[0] = float("inf")  # GEMV may no longer skip zero activations
    x = torch.zeros(48, 1)
    col = int(torch.searchsorted(A.offsets[1:].long(), torch.tensor(0), right=True))
    x[col] = 0.0
    y = torch.ops.sparsekern.spmm(*A.op_args(), x)
    assert torch.isnan(y).any()


def _csc_dense(values, rows, offsets, M, K):
    cols = torch.repeat_interleave(torch.arange(K), offsets.diff().long())
    W = torch.zeros(M, K, dtype=torch.float64)
    return W.index_put_((rows.long(), cols), values.double(), accumulate=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_csc_cache_rebuilds_values_and_pattern_changes(dtype):
    # A training step changes the values only: the repack is re-valued on the cached pattern.
    # Any change of indices or offsets repacks from scratch; a bad index is still an error.
    C.csc_cache_clear()
    g = torch.Generator().manual_seed(4)
    M, K, N = 300, 200, 9
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < 0.3)
    A = sk.to_sparse(W.to(dtype), layout="csc")
    v, r, o = A.values, A.indices.clone(), A.offsets
    B = torch.randn(K, N, generator=g)

    def check():
        y = torch.ops.sparsekern.spmm(v, r, o, M, K, "csc", B)
        torch.testing.assert_close(y.double(), _csc_dense(v, r, o, M, K) @ B.double(),
                                   rtol=1e-4, atol=1e-4)

    check()
    for step in range(4):  # values only, in place
        v.copy_(torch.randn(v.shape, generator=g).to(dtype))
        check()
    assert C.csc_cache_info()[0] == 1
    v[5] = float("inf")
    y = torch.ops.sparsekern.spmm(v, r, o, M, K, "csc", B)
    assert torch.isinf(y).any() or torch.isnan(y).any()
    v[5] = 1.0
    col = int(torch.searchsorted(o[1:].long(), torch.tensor(10), right=True))
    lo, hi = int(o[col]), int(o[col + 1])
    free = sorted(set(range(M)) - set(r[lo:hi].tolist()))
    r[lo] = min(free)  # another row, still in range (the column may now be unsorted)
    check()
    v.mul_(3.0)
    r[hi - 1] = M  # values and pattern change together, the pattern badly
    with pytest.raises(ValueError, match=rf"csc row indices\[{hi - 1}\]={M} is out of range"):
        torch.ops.sparsekern.spmm(v, r, o, M, K, "csc", B)
    r[hi - 1] = max(free)
    check()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M, K", [(64, 48), (600, 500)], ids=["small", "large"])
@pytest.mark.parametrize("N", [2, 17])
def test_csc_cached_repack_checked_beside_or_before_the_product(threads, M, K, N):
    # With 2 threads a small product runs on the cached repack while the other thread compares
    # it with the live bytes (a large one compares first, on both threads). Either way a write
    # torch cannot see (through .data) to values, row indices or offsets reaches the very next
    # call, bit for bit: the answer equals that of fresh copies of the tensors (no cache hit).
    C.csc_cache_clear()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(M + N)
        W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < 0.3)
        A = sk.to_sparse(W, layout="csc")
        v, r, o = A.values, A.indices, A.offsets
        B = torch.randn(K, N, generator=g)

        def check():
            y = torch.ops.sparsekern.spmm(v, r, o, M, K, "csc", B)
            fresh = torch.ops.sparsekern.spmm(v.clone(), r.clone(), o.clone(), M, K, "csc", B)
            assert torch.equal(y, fresh)
            torch.testing.assert_close(y.double(), _csc_dense(v, r, o, M, K) @ B.double(),
                                       rtol=1e-4, atol=1e-4)

        check()
        check()                                         # a hit: served from the repack
        v.data[7] = torch.nextafter(v[7], torch.tensor(float("inf")))  # one ulp
        check()
        v.data[len(v) - 1] *= -2.0                      # the last byte range of a part
        check()
        lo, hi = int(o[1]), int(o[2])                   # column 1's entries
        free = sorted(set(range(M)) - set(r[lo:hi].tolist()))
        r.data[lo] = free[0]                            # another row, in range
        check()
        if hi > lo + 1:                                 # one entry moves to column 0
            o.data[1] += 1
            check()
        r.data[lo] = M                                  # a bad row: still the named error
        with pytest.raises(ValueError, match=rf"csc row indices\[{lo}\]={M} is out of range"):
            torch.ops.sparsekern.spmm(v, r, o, M, K, "csc", B)
        r.data[lo] = free[-1]
        check()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("write", ["data", "load_state_dict", "inference_mode", "sgd"])
def test_csc_cache_never_serves_stale_values_after_a_weight_write(write):
    # Every way a user writes a SparseLinear's values (some leave no version-counter trace)
    # is seen at the next batched call: the re-valued repack follows the live bytes.
    g = torch.Generator().manual_seed(8)
    W = torch.randn(300, 200, generator=g) * (torch.rand(300, 200, generator=g) < 0.2)
    lin = torch.nn.Linear(200, 300)
    with torch.no_grad():
        lin.weight.copy_(W)
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(16, 200, generator=g)
    layer(x)  # cache the repack
    new = torch.randn(layer.values.shape, generator=g)
    if write == "data":
        layer.values.data.copy_(new)
    elif write == "load_state_dict":
        state = {k: v.clone() if torch.is_tensor(v) else v for k, v in layer.state_dict().items()}
        state["values"] = new
        layer.load_state_dict(state)
    elif write == "inference_mode":
        with torch.inference_mode():
            layer.values.copy_(new)
    else:
        layer.values.grad = new.clone()
        torch.optim.SGD([layer.values], lr=1.0).step()
        new = layer.values.detach().clone()
    with torch.no_grad():
        y = layer(x)
    Wn = layer.weight.to_dense()
    assert torch.equal(layer.values.detach(), new)
    torch.testing.assert_close(y, x @ Wn.t() + layer.bias.detach(), rtol=1e-4, atol=1e-4)


def test_csc_cache_entries_die_with_the_weight():
    C.csc_cache_clear()
    W, A = make("csc", None, M=64, K=64, seed=1)
    torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(64, 4))
    n, nbytes = C.csc_cache_info()
    assert n == 1 and nbytes > 0
    del A
    gc.collect()
    assert C.csc_cache_info() == (0, 0)


def test_csc_inference_tensors():
    with torch.inference_mode():
        W, A = make("csc", None, seed=2)
        B = torch.randn(48, 5)
        y = torch.ops.sparsekern.spmm(*A.op_args(), B)
        torch.testing.assert_close(y, W @ B, rtol=1e-5, atol=1e-5)
        y1 = torch.ops.sparsekern.spmm(*A.op_args(), B[:, :1])
        torch.testing.assert_close(y1, W @ B[:, :1], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- backward kernels

BACKWARD_CASES = LAYOUTS + [("bsr", (3, 5)), ("2:4-odd", None)]
bids = [lay if b is None else f"bsr{b[0]}x{b[1]}" for lay, b in BACKWARD_CASES]


def _ref(op, *args):
    with sk.use_backend("reference"):
        return getattr(torch.ops.sparsekern, op)(*args)


@pytest.mark.parametrize("layout,block", BACKWARD_CASES, ids=bids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,g_layout", [(1, "row"), (7, "row"), (70, "col"), (3, "stride0")])
def test_backward_kernels_match_the_reference(layout, block, dtype, N, g_layout):
    # K = 46 with 2:4: the last group is padding (columns >= K get no gradient).
    lay = "2:4" if layout == "2:4-odd" else layout
    M, K = (32, 46) if layout == "2:4-odd" else (32, 48)
    W, A = make(lay, block, M=M, K=48, dtype=dtype, seed=7)
    if K != 48:  # cut the last group to 2 columns: A's format pads it
        A = sk.to_sparse(W[:, :K].contiguous(), layout="2:4")
    if g_layout == "row":
        G, B = torch.randn(M, N), torch.randn(K, N)
    elif g_layout == "col":
        G, B = torch.randn(N, M).t(), torch.randn(N, K).t()
    else:
        G, B = torch.randn(M, 1).expand(M, N), torch.randn(1, N).expand(K, N)
    args = (A.values, A.indices, A.offsets, M, K, lay)
    assert sk.backends.select(lay, dtype, torch.float32, torch.device("cpu")).name == "cpu"
    t = torch.ops.sparsekern.spmm_transposed(*args, G)
    t_ref = _ref("spmm_transposed", *args, G)
    assert t.shape == (K, N) and t.dtype == torch.float32
    torch.testing.assert_close(t, t_ref, rtol=1e-5, atol=1e-5)
    s = torch.ops.sparsekern.spmm_sampled_dot(*args, G, B)
    s_ref = _ref("spmm_sampled_dot", *args, G, B)
    assert s.shape == A.values.shape and s.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(s.float(), s_ref.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
@pytest.mark.parametrize("N", [5, 32, 40])  # 2:4 from N=32: the dense-GEMM branch (ops.cpp)
@pytest.mark.parametrize("G_order", ["row-major", "column-major"])
def test_backward_kernels_opcheck(layout, block, N, G_order):
    # opcheck's fake-tensor test compares the strides too: the 2:4 branch returned a
    # column-major [K, N] there and compiled training crashed.
    W, A = make(layout, block)
    args = (A.values, A.indices, A.offsets, 32, 48, layout)
    G = torch.randn(32, N) if G_order == "row-major" else torch.randn(N, 32).t()
    G, B = G.requires_grad_(), torch.randn(48, N, requires_grad=True)
    torch.library.opcheck(torch.ops.sparsekern.spmm_transposed.default, (*args, G))
    torch.library.opcheck(torch.ops.sparsekern.spmm_sampled_dot.default, (*args, G, B))


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
def test_gradcheck_float32_against_float64_reference(layout, block):
    # gradcheck in float64 exercises the reference; the float32 kernels are checked against
    # the float64 gradients of the same op.
    W, A = make(layout, block, seed=3)
    v = A.values.clone().requires_grad_()
    B = torch.randn(48, 6, requires_grad=True)
    y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 32, 48, layout, B, None)
    gy = torch.randn_like(y)
    y.backward(gy)
    v64 = A.values.double().requires_grad_()
    B64 = B.detach().double().requires_grad_()
    y64 = torch.ops.sparsekern.spmm(v64, A.indices, A.offsets, 32, 48, layout, B64, None)
    y64.backward(gy.double())
    torch.testing.assert_close(v.grad.double(), v64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(B.grad.double(), B64.grad, rtol=1e-4, atol=1e-4)
    # gradcheck itself on a small weight (float64: the reference serves it).
    _, S = make(layout, block, M=8, K=16, seed=3)
    f = lambda vv, bb: torch.ops.sparsekern.spmm(vv, S.indices, S.offsets, 8, 16, layout, bb)
    assert torch.autograd.gradcheck(f, (S.values.double().requires_grad_(),
                                        torch.randn(16, 2, dtype=torch.float64, requires_grad=True)))


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("layout,block,M,K", [("bsr", (32, 32), 70, 100), ("bsr", (8, 16), 64, 96),
                                              ("bsr", (7, 3), 30, 20), ("csc", None, 70, 100),
                                              ("2:4", None, 40, 96)],
                         ids=["bsr32x32-edges", "bsr8x16", "bsr7x3", "csc", "2:4"])
@pytest.mark.parametrize("N", [1, 15, 16, 17, 150])
def test_backward_kernels_every_isa_against_dense(cpu_isa_env, isa, layout, block, M, K, N):
    # Sizes that leave partial register tiles in every direction (rows, columns of a block,
    # N not a multiple of 16) and BSR blocks cut by M and K; fresh inputs per case.
    if isa == "avx2" and not C.cpu_has_avx2() or isa == "avx512" and not C.cpu_has_avx512():
        pytest.skip(f"this CPU/OS has no {isa}")
    cpu_isa_env(isa)
    g = torch.Generator().manual_seed(M * 1000 + N)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        W = W.reshape(M, K // 4, 4)
        W = W.scatter(-1, W.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
        A = sk.to_sparse(W, layout=layout)
    elif layout == "bsr":
        bm, bk = block
        keep = torch.rand((M + bm - 1) // bm, (K + bk - 1) // bk, generator=g) < 0.5
        W = W * keep.repeat_interleave(bm, 0)[:M].repeat_interleave(bk, 1)[:, :K]
        A = sk.to_sparse(W, layout=layout, blocksize=block)
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.3)
        A = sk.to_sparse(W, layout=layout)
    G, B = torch.randn(M, N, generator=g), torch.randn(K, N, generator=g)
    args = (A.values, A.indices, A.offsets, M, K, layout)
    t = torch.ops.sparsekern._spmm_transposed_cpu(*args, G)
    torch.testing.assert_close(t, W.t().double().mm(G.double()).float(), rtol=1e-4, atol=1e-4)
    s = torch.ops.sparsekern._sampled_dot_cpu(*args, G, B)
    s_ref = _ref("spmm_sampled_dot", *args, G, B)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4)

# ----------------------------------------------------------------------------- strided G, B
# The backward kernels read G and B through their strides (no row-major copy in the glue):
# every stride pattern, every layout, every ISA, against the reference.

def _strided(kind, rows, N, g):
    """A [rows, N] float32 view with the stride pattern `kind`, fresh random values."""
    if kind == "row":
        return torch.randn(rows, N, generator=g)
    if kind == "col":  # a transposed view (dY of x @ W.T): strides (1, rows)
        return torch.randn(N, rows, generator=g).t()
    if kind == "expand-cols":  # strides (1, 0)
        return torch.randn(rows, 1, generator=g).expand(rows, N)
    if kind == "expand-rows":  # strides (0, 1)
        return torch.randn(1, N, generator=g).expand(rows, N)
    if kind == "expand-both":  # strides (0, 0)
        return torch.randn(1, 1, generator=g).expand(rows, N)
    if kind == "slice-cols":  # row-contiguous, row stride > N
        return torch.randn(rows, N + 5, generator=g)[:, 2:N + 2]
    if kind == "step":  # strides (2N + 1, 2)
        return torch.randn(rows + 3, 2 * N + 1, generator=g)[1:rows + 1, 0:2 * N:2]
    assert kind == "col-step"  # strides (1, 2 * (rows + 4)), offset
    return torch.randn(2 * N, rows + 4, generator=g).t()[2:rows + 2, ::2]


STRIDE_KINDS = ["row", "col", "expand-cols", "expand-rows", "expand-both", "slice-cols", "step",
                "col-step"]


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("layout,block,M,K", [("bsr", (32, 32), 70, 100), ("bsr", (3, 5), 30, 20),
                                              ("csc", None, 70, 100), ("2:4", None, 40, 96)],
                         ids=["bsr32x32", "bsr3x5", "csc", "2:4"])
@pytest.mark.parametrize("N", [1, 5, 70])
def test_backward_kernels_read_any_strides(cpu_isa_env, isa, layout, block, M, K, N):
    if isa == "avx2" and not C.cpu_has_avx2() or isa == "avx512" and not C.cpu_has_avx512():
        pytest.skip(f"this CPU/OS has no {isa}")
    cpu_isa_env(isa)
    g = torch.Generator().manual_seed(M * 7 + N)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        W = W.reshape(M, K // 4, 4)
        W = W.scatter(-1, W.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
        A = sk.to_sparse(W, layout=layout)
    elif layout == "bsr":
        bm, bk = block
        keep = torch.rand((M + bm - 1) // bm, (K + bk - 1) // bk, generator=g) < 0.5
        W = W * keep.repeat_interleave(bm, 0)[:M].repeat_interleave(bk, 1)[:, :K]
        A = sk.to_sparse(W, layout=layout, blocksize=block)
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.3)
        A = sk.to_sparse(W, layout=layout)
    args = (A.values, A.indices, A.offsets, M, K, layout)
    for gk, bk_ in zip(STRIDE_KINDS, STRIDE_KINDS[1:] + STRIDE_KINDS[:1]):
        G, B = _strided(gk, M, N, g), _strided(bk_, K, N, g)
        assert G.shape == (M, N) and B.shape == (K, N)
        t = torch.ops.sparsekern._spmm_transposed_cpu(*args, G)
        t_ref = _ref("spmm_transposed", *args, G)
        torch.testing.assert_close(t, t_ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"G {gk}: {m}")
        s = torch.ops.sparsekern._sampled_dot_cpu(*args, G, B)
        s_ref = _ref("spmm_sampled_dot", *args, G, B)
        torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"G {gk}, B {bk_}: {m}")


@pytest.mark.parametrize("layout,block", LAYOUTS + [("bsr", (32, 32))],
                         ids=ids + ["bsr32x32"])
@pytest.mark.parametrize("N", [3, 80])
def test_linear_backward_with_transposed_dy_matches_dense(layout, block, N):
    # y = (A @ x.T).T, as SparseLinear computes it: dY reaches the backward column-major.
    M, K = 64, 96
    W, A = make(layout, block, M=M, K=K, seed=N)
    v = A.values.clone().requires_grad_()
    x = torch.randn(N, K, requires_grad=True)
    y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, M, K, layout, x.t(), None).t()
    gy = torch.randn(N, M)
    y.backward(gy)
    xd = x.detach().clone().requires_grad_()
    Wd = W.clone().requires_grad_()
    (xd @ Wd.t()).backward(gy)
    torch.testing.assert_close(x.grad, xd.grad, rtol=1e-4, atol=1e-4)
    s_ref = _ref("spmm_sampled_dot", A.values, A.indices, A.offsets, M, K, layout,
                 gy.t().contiguous(), x.detach().t().contiguous())
    torch.testing.assert_close(v.grad, s_ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- CSC in place
# On AVX-512 the CSC backward reads the format in place, per column and block of 128 rows,
# when every column's rows are sorted, and takes the coordinate path otherwise: both against
# the reference, over several row blocks, every index and value dtype, unsorted and repeated
# rows, empty columns.

def _csc_args(M, K, density, rows_dtype, off_dtype, dtype, order, g):
    """(values, indices, offsets) of a random CSC [M, K]; order: sorted, shuffled, repeated."""
    W = torch.randn(M, K, generator=g) * (torch.rand(M, K, generator=g) < density)
    W[:, ::5] = 0.0  # empty columns
    A = sk.to_sparse(W.to(dtype), layout="csc")
    v, r, o = A.values, A.indices.long(), A.offsets.long()
    if order != "sorted":
        parts_v, parts_r, counts = [], [], []
        for k in range(K):
            vk, rk = v[o[k]:o[k + 1]], r[o[k]:o[k + 1]]
            if order == "shuffled":
                p = torch.randperm(rk.numel(), generator=g)
                vk, rk = vk[p], rk[p]
            elif rk.numel():  # one row twice (still sorted): its two values add up
                vk, rk = torch.cat([vk, vk[-1:] * 0.5]), torch.cat([rk, rk[-1:]])
            parts_v.append(vk), parts_r.append(rk), counts.append(rk.numel())
        v, r = torch.cat(parts_v), torch.cat(parts_r)
        o = torch.zeros(K + 1, dtype=torch.long)
        o[1:] = torch.tensor(counts).cumsum(0)
    return v.contiguous(), r.to(rows_dtype).contiguous(), o.to(off_dtype).contiguous()


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
@pytest.mark.parametrize("M,density", [(129, 0.3), (300, 0.05), (1000, 0.3)])
@pytest.mark.parametrize("rows_dtype,off_dtype", [(torch.int16, torch.int32),
                                                  (torch.int32, torch.int64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("order", ["sorted", "shuffled", "repeated"])
@pytest.mark.parametrize("N", [1, 33, 130])
def test_csc_backward_in_place_against_the_reference(cpu_isa_env, isa, M, density, rows_dtype,
                                                     off_dtype, dtype, order, N):
    if isa == "avx2" and not C.cpu_has_avx2() or isa == "avx512" and not C.cpu_has_avx512():
        pytest.skip(f"this CPU/OS has no {isa}")
    cpu_isa_env(isa)
    K = 37
    g = torch.Generator().manual_seed(M * 31 + N)
    v, r, o = _csc_args(M, K, density, rows_dtype, off_dtype, dtype, order, g)
    args = (v, r, o, M, K, "csc")
    G = torch.randn(N, M, generator=g).t()  # dY's transposed view, as autograd hands it over
    B = torch.randn(K, N, generator=g)
    t = torch.ops.sparsekern._spmm_transposed_cpu(*args, G)
    torch.testing.assert_close(t, _ref("spmm_transposed", *args, G), rtol=1e-4, atol=1e-4)
    s = torch.ops.sparsekern._sampled_dot_cpu(*args, G, B)
    tol = 1e-4 if dtype == torch.float32 else 1e-2  # a bfloat16 output rounds (1 ulp apart)
    torch.testing.assert_close(s.float(), _ref("spmm_sampled_dot", *args, G, B).float(),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("op", ["_spmm_transposed_cpu", "_sampled_dot_cpu"])
@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("bad", ["row=M", "row=-1", "unsorted row=M", "offsets decrease"])
def test_csc_backward_in_place_rejects_bad_formats(op, where, bad):
    # Every row index and offset is checked before it is used, in any row block and column.
    g = torch.Generator().manual_seed(5)
    M, K, N = 300, 37, 20
    v, r, o = _csc_args(M, K, 0.3, torch.int16, torch.int32, torch.float32, "sorted", g)
    r, o = r.clone(), o.clone()
    col = 1 if where == "first" else K - 1
    lo, hi = int(o[col]), int(o[col + 1])
    assert hi - lo >= 3
    if bad == "row=M":
        r[hi - 1] = M
    elif bad == "row=-1":
        r[lo] = -1
    elif bad == "unsorted row=M":
        r[lo] = M
    else:
        o[col] = o[col + 1] + 1
    G, B = torch.randn(M, N, generator=g), torch.randn(K, N, generator=g)
    dense = (G,) if op == "_spmm_transposed_cpu" else (G, B)
    msg = (r"csc offsets must not decrease" if bad == "offsets decrease" else
           rf"csc row indices\[\d+\]=(-1|{M}) is out of range")
    with pytest.raises(ValueError, match=msg):
        getattr(torch.ops.sparsekern, op)(v, r, o, M, K, "csc", *dense)


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=ids)
@pytest.mark.parametrize("create_graph", [False, True])
def test_input_gradient_of_a_linear_arrives_like_its_input(layout, block, create_graph):
    # x [N, K] contiguous: the backward hands x's gradient back contiguous (no strided copy
    # left for autograd), except under create_graph, where it must stay differentiable.
    W, A = make(layout, block, M=32, K=48, seed=11)
    layer = sk.SparseLinear.from_dense(_linear(W), layout=layout, blocksize=block) \
        if layout == "bsr" else sk.SparseLinear.from_dense(_linear(W), layout=layout)
    x = torch.randn(40, 48, requires_grad=True)
    g = torch.randn(40, 32)
    (dx,) = torch.autograd.grad(layer(x), x, g, create_graph=create_graph)
    torch.testing.assert_close(dx, g @ W, rtol=1e-4, atol=1e-4)
    if create_graph:
        (ddx,) = torch.autograd.grad(dx.sum(), layer.values)
        assert ddx.shape == layer.values.shape
    else:
        assert dx.is_contiguous()
        x.grad = None
        layer(x).backward(g)
        assert x.grad.is_contiguous() and torch.equal(x.grad, dx)


def _linear(W):
    lin = torch.nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        lin.weight.copy_(W)
    return lin


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("layout", ["csc", "bsr"])
@pytest.mark.parametrize("op", ["_spmm_transposed_cpu", "_sampled_dot_cpu"])
def test_backward_offsets_that_overshoot_then_end_right_are_rejected(cpu_isa_env, isa, layout,
                                                                     op):
    # offsets [..., nnz + 1, nnz]: every step but the last is non-decreasing, so a check per
    # column (block row) would let the one before read (and write) past the entries; every
    # offset is checked before any entry is used, on every ISA.
    if isa == "avx2" and not C.cpu_has_avx2() or isa == "avx512" and not C.cpu_has_avx512():
        pytest.skip(f"this CPU/OS has no {isa}")
    cpu_isa_env(isa)
    W, A = make(layout, (4, 4) if layout == "bsr" else None, M=32, K=48, seed=9)
    o = A.offsets.clone()
    o[-2] = o[-1] + 1
    M, K, N = 32, 48, 6
    G, B = torch.randn(M, N), torch.randn(K, N)
    dense = (G,) if op == "_spmm_transposed_cpu" else (G, B)
    with pytest.raises(ValueError, match=r"offsets"):
        getattr(torch.ops.sparsekern, op)(A.values, A.indices, o, M, K, layout, *dense)


@pytest.mark.parametrize("layout", ["2:4", "1:4"])
@pytest.mark.parametrize("tokens", [31, 32, 64])
def test_compiled_sparse_linear_trains_at_any_batch(layout, tokens):
    """The trial's crash: torch.compile training of a 2:4 / 1:4 SparseLinear from 32 rows on
    (x.T is column-major B, so the input gradient's layout matters)."""
    torch._dynamo.reset()
    torch.manual_seed(tokens)
    lin = torch.nn.Linear(16, 8)
    with torch.no_grad():  # at most 1 nonzero per group of 4 fits both layouts
        lin.weight.mul_(torch.arange(16) % 4 == 0)
    layer = sk.SparseLinear.from_dense(lin, layout=layout)
    x = torch.randn(tokens, 16, requires_grad=True)
    layer(x).square().sum().backward()
    want_x, want_v = x.grad.clone(), layer.values.grad.clone()
    x.grad = layer.values.grad = None
    torch.compile(layer, fullgraph=True)(x).square().sum().backward()
    torch.testing.assert_close(x.grad, want_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.values.grad, want_v, rtol=1e-5, atol=1e-4)
