"""Deployment paths: a model of SparseLinear layers through torch.export and AOTInductor
(``torch._inductor.aoti_compile_and_package`` / ``aoti_load_package``), the way an inference
server ships a model without Python-side tracing. The packaged model calls
``sparsekern::spmm`` through the dispatcher, so it gives the eager model's output at every
batch size the exported range allows, N = 1 (the GEMV) included."""
import pytest
import torch
from torch import nn

from sparsekern import _extension
from sparsekern.nn import SparseLinear

needs_c = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")


def _pruned_linear(n_out, n_in, keep_every, seed):
    """nn.Linear [n_out, n_in] keeping 1 weight in each `keep_every` along K: fits every layout
    (2:4, 1:4, csc; bsr stores its blocks whole)."""
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.mul_((torch.arange(n_in) % keep_every == seed % keep_every).float())
    return lin


def _models(layout):
    blocksize = (4, 4) if layout == "bsr" else None
    dense = nn.Sequential(_pruned_linear(48, 40, 4, 1), nn.GELU(), _pruned_linear(24, 48, 4, 2))
    sparse = nn.Sequential(SparseLinear.from_dense(dense[0], layout, blocksize), nn.GELU(),
                           SparseLinear.from_dense(dense[2], layout, blocksize))
    return dense.eval(), sparse.eval()


@needs_c
@pytest.mark.parametrize("layout", ["2:4", "1:4", "csc", "bsr"])
def test_exported_and_aoti_packaged_model_matches_eager(layout, tmp_path):
    dense, sparse = _models(layout)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(sparse, (torch.randn(5, 40),), dynamic_shapes=({0: batch},))
    assert any("sparsekern.spmm" in str(n.target) for n in ep.graph.nodes), ep.graph
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "m.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    with torch.inference_mode():
        for n in (1, 2, 7, 64):
            x = torch.randn(n, 40)
            want = dense(x)
            torch.testing.assert_close(ep.module()(x), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(runner(x), want, rtol=1e-5, atol=1e-5)
