"""SparseConv2d under torch.jit.trace and torch.compile: the same ops for every batch size, and
an output Inductor can lay out when the spatial size (and batch) change between calls."""
import warnings

import pytest
import torch
from torch import nn

from sparsekern import _extension
from sparsekern.conv import SparseConv2d

needs_c = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")


def _sparse_conv(cin, cout, k, layout="csc", seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    with torch.no_grad():  # 1 nonzero per group of 4 along K: fits 2:4 and csc
        conv.weight.mul_((torch.arange(cin * k * k) % 4 == 0).reshape(1, cin, k, k))
    return conv, SparseConv2d.from_dense(conv, layout)


@pytest.mark.parametrize("k", [1, 3])
def test_jit_trace_at_batch_1_runs_at_other_batches(k):
    """`B = cols[0] if N == 1 else ...` was frozen into a trace taken at batch 1: at batch 3,
    "shape '[16, 3, 10, 10]' is invalid for input of size 1600"."""
    conv, sparse = _sparse_conv(8, 16, k, "2:4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        at1 = torch.jit.trace(sparse, torch.randn(1, 8, 10, 10), check_trace=False)
        at3 = torch.jit.trace(sparse, torch.randn(3, 8, 10, 10), check_trace=False)
    with torch.no_grad():
        for traced, x in ((at1, torch.randn(3, 8, 10, 10)), (at1, torch.randn(2, 8, 6, 14)),
                          (at3, torch.randn(1, 8, 10, 10)), (at1, torch.randn(1, 8, 5, 7))):
            torch.testing.assert_close(traced(x), conv(x), rtol=1e-5, atol=1e-5)


@needs_c
def test_compiled_training_at_a_new_spatial_size_and_batch_1():
    """Sequential(SparseConv2d, nn.Conv2d) compiled in grad mode, called at [3,3,11,19] then
    [1,3,4,9]: the recompile raised InductorError "cannot determine truth value of
    Relational" (at N=1 the output was a permuted view of the spmm result)."""
    torch._dynamo.reset()
    conv, sparse = _sparse_conv(3, 8, 3)
    torch.manual_seed(1)
    model = nn.Sequential(sparse, nn.Conv2d(8, 16, 3, padding=1))
    compiled = torch.compile(model)
    for shape in [(3, 3, 11, 19), (1, 3, 4, 9)]:
        x = torch.randn(*shape)
        y = compiled(x)
        y.square().sum().backward()
        got = sparse.values.grad.clone()
        sparse.values.grad = None
        want_y = model(x)
        want_y.square().sum().backward()
        torch.testing.assert_close(y, want_y, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got, sparse.values.grad, rtol=1e-4, atol=1e-4)
        model.zero_grad(set_to_none=True)
