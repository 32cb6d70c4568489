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
