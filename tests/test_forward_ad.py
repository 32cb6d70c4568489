"""Forward-mode AD through the sparse layers and the op's wrappers. The op's autograd is a
C++ node with no forward formula: torch.func.jvp / jacfwd through it returned all-zero
tangents without an error. Calls carrying a tangent now take a differentiable path."""
import copy

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

import sparsekern as sk
from tests.helpers import random_pattern_weight

CASES = [("2:4", None), ("csc", None), ("bsr", (4, 4))]


def _pair(layout, bs):
    torch.manual_seed(0)
    lin = nn.Linear(16, 12)
    with torch.no_grad():
        lin.weight.copy_(random_pattern_weight(12, 16, layout, density=0.3, blocksize=(4, 4)))
    return lin, sk.SparseLinear.from_dense(copy.deepcopy(lin), layout=layout, blocksize=bs)


@pytest.mark.parametrize("layout,bs", CASES)
@pytest.mark.parametrize("shape", [(16,), (5, 16), (2, 3, 16)])
def test_jvp_and_jacfwd_of_sparse_linear_equal_dense(layout, bs, shape):
    dense, sparse = _pair(layout, bs)
    x, t = torch.randn(shape), torch.randn(shape)
    yd, td = torch.func.jvp(dense, (x,), (t,))
    ys, ts = torch.func.jvp(sparse, (x,), (t,))
    torch.testing.assert_close(ys, yd)
    torch.testing.assert_close(ts, td)
    assert ts.abs().sum() > 0
    torch.testing.assert_close(torch.func.jacfwd(sparse)(torch.randn(16)), dense.weight)


@pytest.mark.parametrize("layout,bs", CASES)
def test_jvp_with_respect_to_values_and_bias(layout, bs):
    dense, sparse = _pair(layout, bs)
    x = torch.randn(4, 16)
    p = {k: v.detach() for k, v in sparse.named_parameters()}
    tv = {"values": torch.randn_like(p["values"]), "bias": torch.randn_like(p["bias"])}
    _, got = torch.func.jvp(lambda q: torch.func.functional_call(sparse, q, (x,)), (p,), (tv,))
    dW = sk.formats.from_parts(layout, tv["values"], sparse.indices, sparse.offsets,
                               (12, 16), validate=False).to_dense()
    torch.testing.assert_close(got, x @ dW.t() + tv["bias"])


@pytest.mark.parametrize("layout,bs", CASES)
def test_forward_ad_dual_tensors_and_the_functional_wrappers(layout, bs):
    dense, sparse = _pair(layout, bs)
    x, t = torch.randn(3, 16), torch.randn(3, 16)
    with fwAD.dual_level():
        out = fwAD.unpack_dual(sparse(fwAD.make_dual(x, t)))
        want = fwAD.unpack_dual(dense(fwAD.make_dual(x, t)))
        spmm = fwAD.unpack_dual(sk.spmm(sparse.weight, fwAD.make_dual(x.t(), t.t())))
    torch.testing.assert_close(out.primal, want.primal)
    torch.testing.assert_close(out.tangent, want.tangent)
    torch.testing.assert_close(spmm.tangent, dense.weight @ t.t())


def test_jvp_of_sparse_conv2d_equals_dense():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(random_pattern_weight(8, 36, "2:4").reshape(conv.weight.shape))
    sconv = sk.SparseConv2d.from_dense(copy.deepcopy(conv), layout="2:4")
    x, t = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    yd, td = torch.func.jvp(conv, (x,), (t,))
    ys, ts = torch.func.jvp(sconv, (x,), (t,))
    torch.testing.assert_close(ys, yd, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ts, td, rtol=1e-4, atol=1e-5)


def test_reverse_mode_and_vmap_keep_the_op():
    """Without tangents nothing changes: the op runs (its C++ node records backward)."""
    dense, sparse = _pair("csc", None)
    x = torch.randn(5, 16, requires_grad=True)
    y = sparse(x)
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "CppFunction"  # the op's node
    torch.testing.assert_close(torch.func.vmap(sparse)(torch.randn(2, 5, 16)).shape,
                               torch.Size([2, 5, 12]))



@pytest.mark.parametrize("layout", ["2:4", "csc", "bsr"])
def test_forward_ad_rejects_a_malformed_format_as_the_op_does(layout):
    # The forward-AD path builds the dense weight itself (to_dense); it skipped the index
    # checks and returned a wrong product (a row index -1 landed in row M-1) without an error.
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs = (2, 2) if layout == "bsr" else None
    W = random_pattern_weight(6, 12, layout, density=0.4, blocksize=(2, 2), dtype=torch.float64,
                              generator=gen)
    A = sk.to_sparse(W, layout, blocksize=bs)
    B, T = (torch.randn(12, 3, dtype=torch.float64, generator=gen) for _ in range(2))
    with sk.use_backend("reference"):  # the well-formed weight: the reference's product
        want_y, want_t = sk.spmm(A, B), sk.spmm(A, T)
    y, t = torch.func.jvp(lambda b: sk.spmm(A, b), (B,), (T,))
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(t, want_t)

    idx = A.indices.clone()
    if layout == "2:4":
        idx[0, 0] = 0x00  # group 0 of row 0: positions (0, 0), not strictly increasing
        match = r"2:4 indices row 0, group 0: positions \(0, 0\) must be strictly increasing"
    else:
        idx[0] = -1  # negative: wrapped to the last row / block column
        match = r"indices\[0\]=-1 is out of range; expected 0 <= index < "
    bad = sk.formats.from_parts(layout, A.values, idx, A.offsets, A.shape, validate=False)
    with sk.use_backend("reference"), pytest.raises(ValueError, match=match):
        sk.spmm(bad, B)
    with pytest.raises(ValueError, match=match):
        torch.func.jvp(lambda b: sk.spmm(bad, b), (B,), (T,))
    with pytest.raises(ValueError, match=match):
        torch.func.jvp(lambda x: sk.linear(x, bad), (B.t(),), (T.t(),))


LAYOUTS_ALL = CASES + [("sell", None), ("1:4", None)]


@pytest.mark.parametrize("layout,bs", LAYOUTS_ALL)
def test_functorch_reverse_transforms_equal_dense(layout, bs):
    """torch.func.grad / jacrev / vjp and vmap-of-grad (per-sample gradients) through a sparse
    layer: the op's C++ autograd node cannot run under functorch ("cannot use C++
    torch::autograd::Function with functorch transforms"); the wrappers take the dense path
    there. Gradients of the input, the values and the bias equal the dense layer's."""
    torch.manual_seed(torch.seed() % 2**31)
    lin = nn.Linear(16, 12)
    with torch.no_grad():
        lin.weight.copy_(random_pattern_weight(12, 16, layout, density=0.3, blocksize=(4, 4)))
    sparse = sk.SparseLinear.from_dense(copy.deepcopy(lin), layout=layout, blocksize=bs)
    x = torch.randn(5, 16)
    torch.testing.assert_close(torch.func.jacrev(sparse)(x[0]), lin.weight)
    gx = torch.func.grad(lambda x_: sparse(x_).pow(2).sum())(x)
    torch.testing.assert_close(gx, torch.func.grad(lambda x_: lin(x_).pow(2).sum())(x))
    p = {k: t.detach() for k, t in sparse.named_parameters()}
    gp = torch.func.grad(lambda q: torch.func.functional_call(sparse, q, (x,)).pow(2).sum())(p)
    dW = torch.func.grad(lambda w: (x @ w.t() + lin.bias).pow(2).sum())(lin.weight.detach())
    def scatter(values):  # the values' gradient at the stored entries, as a dense matrix
        return sk.formats.from_parts(layout, values, sparse.indices, sparse.offsets, (12, 16),
                                     validate=False).to_dense()

    stored = scatter(torch.ones_like(p["values"])) != 0  # 2:4/BSR also store some zeros
    torch.testing.assert_close(scatter(gp["values"]), dW * stored)
    torch.testing.assert_close(gp["bias"], 2 * (lin(x)).sum(0).detach())
    per_sample = torch.func.vmap(torch.func.grad(lambda x_: sparse(x_).sum()))(x)
    torch.testing.assert_close(per_sample, lin.weight.sum(0).expand(5, 16).detach())
    _, pull = torch.func.vjp(sparse, x)
    ct = torch.randn(5, 12)
    torch.testing.assert_close(pull(ct)[0], ct @ lin.weight.detach())
