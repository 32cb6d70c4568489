"""A bfloat16 / float16 model on the CPU kernels: weights and activations in one half dtype.

The kernels take float32 B; csrc/ops.cpp runs them on a float32 copy of B (and bias, and G in
the backward) and rounds the output once to B's dtype. So every result must be the float64
oracle's within one rounding to the half dtype (plus float32 accumulation error), in B's
dtype and with the output layout rule of float32 calls, and no call may fall back to the
reference backend (it did before: 8-75x slower than torch's bfloat16 dense layer).
"""
import pytest
import torch

import sparsekern as sk
from sparsekern import _extension
from sparsekern.backends import reference

from .test_cpu_kernels import make_weight, one_thread, pack  # noqa: F401 (autouse)

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
C = _extension._C

HALF = [torch.bfloat16, torch.float16]
#: Half of one unit in the last place, relative (round to nearest).
HALF_ULP = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
_REF_SPMM = reference.spmm  # the oracle (the no_reference fixture patches the module's)
CASES = [("2:4", None), ("bsr", (32, 32)), ("bsr", (3, 5)), ("csc", None), ("1:4", None),
         ("sell", None)]


def case_id(case):
    layout, block = case
    return layout if block is None else f"bsr{block[0]}x{block[1]}"


@pytest.fixture
def no_reference(monkeypatch):
    """Any use of the reference backend fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the reference backend ran a half-precision call")
    for name in ("spmm", "spmm_transposed", "sampled_dot"):
        monkeypatch.setattr(reference, name, refuse)


def make(case, M, K, dtype, seed=0):
    layout, block = case
    base = "2:4" if layout == "1:4" else "csc" if layout == "sell" else layout
    W = make_weight(M, K, base, block, density=0.25 if layout == "1:4" else 0.35,
                    dtype=torch.float32, seed=seed)
    if layout == "1:4":  # at most one nonzero per group of 4
        Wg = torch.nn.functional.pad(W, (0, -K % 4)).reshape(M, -1, 4)
        keep = Wg.abs().argmax(-1, keepdim=True)
        W = torch.zeros_like(Wg).scatter(-1, keep, Wg.gather(-1, keep)).reshape(M, -1)[:, :K]
    W = W.to(dtype)
    return pack(W, layout, block) if layout in ("bsr", "2:4", "csc") else \
        sk.to_sparse(W, layout=layout)


def oracle(A, B, bias):
    """float64 A @ B + bias on the same stored values, and the size of its terms."""
    M, K = A.shape
    lay = A.layout

    def run(f):
        out = torch.empty(M, B.shape[1], dtype=torch.float64)
        return _REF_SPMM(f(A.values.double()), A.indices, A.offsets, M, K, lay,
                              f(B.double()), None if bias is None else f(bias.double()), out)
    return run(lambda t: t), run(torch.abs)


def assert_rounded_once(out, ref, mag, dtype):
    """|out - ref| within one rounding to ``dtype`` plus float32 accumulation error."""
    err = (out.double() - ref).abs()
    allowed = HALF_ULP[dtype] * ref.abs() * 1.001 + 2e-5 * mag + 1e-30
    worst = (err / allowed).max().item() if err.numel() else 0.0
    assert worst <= 1.0, f"error {worst:.3g}x the allowed (one {dtype} rounding)"


def b_variants(K, N, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    yield "row-major", torch.randn(K, N, generator=g).to(dtype)
    yield "column-major", torch.randn(N, K, generator=g).to(dtype).t()
    yield "strided", torch.randn(2 * K + 1, 3 * N + 2, generator=g).to(dtype)[1::2, 2::3]
    yield "expanded", torch.randn(K, 1, generator=g).to(dtype).expand(K, N)


def test_kernel_exists_for_a_half_model_only():
    for lay in ("2:4", "bsr", "csc"):
        for dt in HALF:
            assert C.kernel_exists(lay, dt, dt)
            assert C.kernel_exists(lay, dt, torch.float32)  # weight-only, as before
            assert not C.kernel_exists(lay, torch.float32, dt)
        assert not C.kernel_exists(lay, torch.bfloat16, torch.float16)
        assert not C.kernel_exists(lay, torch.float16, torch.bfloat16)
        assert not C.kernel_exists(lay, torch.float64, torch.float64)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("backend", ["fast path", "cpu"])
def test_half_model_matches_the_oracle(case, dtype, backend, no_reference):
    M, K = 67, 53
    A = make(case, M, K, dtype)
    bias = torch.randn(M).to(dtype)
    for i, N in enumerate([1, 2, 7, 17, 40]):
        for j, (name, B) in enumerate(b_variants(K, N, dtype, seed=N)):
            bb = bias if (i + j) % 2 else None
            if backend == "cpu" and case[0] in ("1:4", "sell") and not B.isfinite().all():
                continue
            if backend == "fast path":
                out = torch.ops.sparsekern.spmm(*A.op_args(), B, bb)
            else:
                with sk.use_backend("cpu"):
                    out = sk.spmm(A, B) if bb is None else torch.ops.sparsekern.spmm(
                        *A.op_args(), B, bb)
            assert out.dtype == dtype and out.shape == (M, N), (name, N)
            ref, mag = oracle(A, B, bb)
            try:
                assert_rounded_once(out, ref, mag, dtype)
            except AssertionError as e:
                raise AssertionError(f"N={N}, B {name}, bias={bb is not None}: {e}") from e


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_output_layout_follows_B(dtype):
    A = make(("csc", None), 40, 24, dtype)
    x = torch.randn(9, 24).to(dtype)
    assert torch.ops.sparsekern.spmm(*A.op_args(), x.t()).stride() == (1, 40)
    assert torch.ops.sparsekern.spmm(*A.op_args(), x.t().contiguous()).stride() == (9, 1)


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_nan_inf_propagate_through_stored_entries(case, dtype):
    M, K = 33, 40
    A = make(case, M, K, dtype)
    for N in (1, 10):
        B = torch.randn(K, N).to(dtype)
        B[3, 0], B[17, -1], B[-1, 0] = float("nan"), float("inf"), float("-inf")
        out = torch.ops.sparsekern.spmm(*A.op_args(), B)
        ref, _ = oracle(A, B, None)
        assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("MKN", [(0, 8, 3), (8, 0, 3), (8, 8, 0)])
def test_half_empty_sizes(case, dtype, MKN):
    M, K, N = MKN
    A = make(case, M, K, dtype)
    bias = torch.randn(M).to(dtype)
    out = torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(K, N).to(dtype), bias)
    assert out.dtype == dtype and out.shape == (M, N)
    if K == 0:
        assert torch.equal(out, bias[:, None].expand(M, N))


@pytest.mark.parametrize("layout", ["2:4", "bsr", "csc"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("tokens", [1, 5, 40])
def test_half_sparse_linear_forward_and_backward(layout, dtype, tokens, no_reference):
    """SparseLinear of a half model against the float64 product of the same weights: the
    output and the gradients of x, the values and the bias, each within one rounding."""
    torch.manual_seed(tokens)
    M, K = 48, 64
    case = (layout, (16, 16) if layout == "bsr" else None)
    A = make(case, M, K, dtype, seed=tokens)
    dense = torch.nn.Linear(K, M).to(dtype)
    with torch.no_grad():
        dense.weight.copy_(A.to_dense())
    layer = sk.SparseLinear.from_dense(dense, layout=layout,
                                       **({"blocksize": (16, 16)} if layout == "bsr" else {}))
    x = torch.randn(tokens, K).to(dtype).requires_grad_()
    y = layer(x)
    assert y.dtype == dtype
    g = torch.randn_like(y)
    y.backward(g)

    W64 = A.to_dense().double()
    x64 = x.detach().double()
    b64 = dense.bias.detach().double()
    ref = x64 @ W64.T + b64
    assert_rounded_once(y.detach(), ref, x64.abs() @ W64.abs().T + b64.abs(), dtype)
    g64 = g.double()
    assert_rounded_once(x.grad, g64 @ W64, g64.abs() @ W64.abs(), dtype)
    dW = (g64.T @ x64)  # the values' gradient is dW at the stored entries
    mag = g64.abs().T @ x64.abs()
    assert layer.values.grad.dtype == dtype
    # The packed gradient against the same entries of dW (via the layer's own to_dense map).
    mask_vals = layer.values.detach().clone()
    with torch.no_grad():
        layer.values.copy_(layer.values.grad)
    dW_packed = layer.weight.to_dense().double()
    with torch.no_grad():
        layer.values.copy_(mask_vals)
    on = A.to_dense() != 0
    assert_rounded_once(dW_packed[on], dW[on], mag[on], dtype)
    assert_rounded_once(layer.bias.grad, g64.sum(0), g64.abs().sum(0), dtype)


@pytest.mark.parametrize("layout", ["2:4", "bsr", "csc", "1:4"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_auto_times_half_layers_on_the_kernels(layout, dtype):
    """sparsify(layout="auto") times a layer only on a compiled kernel ("no-kernel" points are
    never chosen): a half-precision model's layers were all left dense before."""
    from sparsekern.timing.machine import serving_backend
    assert serving_backend(layout, dtype, "cpu", 64, 64, 8) == "cpu"


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_model_follows_every_write_to_the_weights(dtype):
    """CSC at N > 1 runs on a repack cached per weight (csrc/ops.cpp): a bf16/f16 model's calls
    must follow copy_, .data writes, a NumPy-style view write, inference-mode writes and
    load_state_dict of another pattern, as float32 calls do."""
    torch.manual_seed(0)
    M, K, N = 48, 64, 9
    A = make(("csc", None), M, K, dtype)
    dense = torch.nn.Linear(K, M, bias=False).to(dtype)
    with torch.no_grad():
        dense.weight.copy_(A.to_dense())
    layer = sk.SparseLinear.from_dense(dense, layout="csc")
    x = torch.randn(N, K).to(dtype)

    def check():
        W64 = layer.weight.to_dense().double()
        ref = x.double() @ W64.T
        assert_rounded_once(layer(x).detach(), ref, x.double().abs() @ W64.abs().T, dtype)

    check()
    with torch.no_grad():
        layer.values.copy_(torch.randn_like(layer.values))
    check()
    layer.values.data.mul_(-2)
    check()
    layer.values.detach()[3] = 7.0  # a view that shares the storage (no version bump seen)
    check()
    with torch.inference_mode():
        layer.values.add_(1.0)
    check()
    other = make(("csc", None), M, K, dtype, seed=5)
    d2 = torch.nn.Linear(K, M, bias=False).to(dtype)
    with torch.no_grad():
        d2.weight.copy_(other.to_dense())
    layer.load_state_dict(sk.SparseLinear.from_dense(d2, layout="csc").state_dict())
    check()
