"""What a packed layer takes over from the layer it replaces, and what it keeps when loaded.

Found by a new user's trial: hooks registered before ``sparsify`` were dropped; a
``load_state_dict`` with another pattern replaced the ``values`` Parameter (an optimizer
built before the load then trained a detached tensor); a layer with no outputs
(``nn.Linear(in, 0)``) failed every prune and pack with a raw reshape error; int16 CSC
indices stopped DistributedDataParallel (``sk.prepare_ddp``; the 2-rank run is in
tests/prune/test_prune_distill.py).
"""

import copy

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune


def _pruned(ratio=0.8, seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
    prune.prune_model(m, ratio)
    return m


@pytest.mark.parametrize("layout", ["csc", "2:4", "bsr", "sell"])
def test_sparsify_keeps_forward_and_backward_hooks(layout):
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
    prune.prune_model(m, None, granularity="2:4") if layout == "2:4" else prune.prune_model(
        m, 0.9, granularity=(32, 32) if layout == "bsr" else "fine")
    calls, outs = [], []
    m[0].register_forward_pre_hook(lambda mod, args: calls.append("pre"))
    handle = m[0].register_forward_hook(lambda mod, args, out: outs.append(out.detach()))
    m[0].register_full_backward_hook(lambda mod, gi, go: calls.append("backward"))
    x = torch.randn(4, 64, requires_grad=True)
    dense_out = m[0](x).detach()
    calls.clear(), outs.clear()
    s = sk.sparsify(m, layout=layout)
    assert type(s[0]).__name__ == "SparseLinear"
    s(x).sum().backward()
    assert calls == ["pre", "backward"]
    torch.testing.assert_close(outs[0], dense_out, rtol=1e-5, atol=1e-5)
    handle.remove()  # the user's handle still removes the hook from the packed layer
    s(x)
    assert len(outs) == 1


def test_sparsify_of_a_single_layer_keeps_its_hooks():
    lin = nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight[torch.rand_like(lin.weight) < 0.9] = 0
    seen = []
    lin.register_forward_hook(lambda mod, args, out: seen.append(type(mod).__name__))
    layer = sk.sparsify(lin, layout="csc")
    layer(torch.randn(2, 32))
    assert seen == ["SparseLinear"]


def test_weight_recomputing_hooks_stay_behind():
    """torch.nn.utils.prune's pre-hook computes weight = weight_orig * weight_mask; the
    packed layer holds that weight and has no weight_orig: the hook is not taken over."""
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    torch.nn.utils.prune.l1_unstructured(lin, "weight", amount=0.9)
    seen = []
    lin.register_forward_pre_hook(lambda mod, args: seen.append("user"))
    x = torch.randn(3, 32)
    want = lin(x).detach()
    seen.clear()
    m = sk.sparsify(nn.Sequential(lin), layout="csc")
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)
    assert seen == ["user"]
    assert len(m[0]._forward_pre_hooks) == 1


def test_load_state_dict_with_another_pattern_keeps_the_values_parameter():
    ckpt = sk.sparsify(_pruned(0.8), layout="csc").state_dict()
    model = sk.sparsify(_pruned(0.5), layout="csc", max_density=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    values = model[0].values
    model(torch.randn(8, 64)).sum().backward()
    model.load_state_dict(ckpt)
    assert model[0].values is values  # the optimizer still holds the layer's Parameter
    assert values.shape == ckpt["0.values"].shape and values.grad is None
    assert torch.equal(values.detach(), ckpt["0.values"])
    before = values.detach().clone()
    model(torch.randn(8, 64)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, values.detach())  # it trains after the resume


@pytest.mark.parametrize("granularity", ["fine", "2:4", (4, 4)])
def test_a_layer_with_no_outputs_is_left_out_of_pruning(granularity, caplog):
    m = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 0))
    ratio = None if granularity == "2:4" else 0.5
    with caplog.at_level("INFO", logger="sparsekern"):
        masks = prune.prune_model(m, ratio, granularity=granularity, criterion="wanda",
                                  calib=[torch.randn(8, 64)])
    assert list(masks) == ["0"]
    assert "1 left out: its weight has no elements (shape [0, 64])" in caplog.text
    with pytest.raises(ValueError, match=r"layer '1': its weight has no elements \(shape "
                                         r"\[0, 64\]\): nothing to prune; leave it out"):
        prune.prune_model(m, 0.5, layers=["1"])


def test_sparsify_leaves_a_layer_with_no_outputs_dense():
    m = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 0))
    s = sk.sparsify(m, layout="csc", max_density=1.0)
    assert s.sparsekern_report["1"] == (
        "dense", "its weight has no elements (shape [0, 64]): nothing to pack")
    assert s(torch.randn(2, 64)).shape == (2, 0)
    layer = sk.SparseLinear.from_dense(nn.Linear(8, 0), layout="csc")
    assert layer(torch.randn(3, 8)).shape == (3, 0)


def test_prepare_ddp_without_a_process_group_names_the_int16_buffers():
    model = sk.sparsify(_pruned(0.8), layout="csc")
    assert model[0].indices.dtype == torch.int16
    assert sk.prepare_ddp(model) == ["0.indices", "2.indices"]
    assert model._ddp_params_and_buffers_to_ignore == ["0.indices", "2.indices"]
    assert sk.prepare_ddp(model) == ["0.indices", "2.indices"]  # idempotent
    assert model._ddp_params_and_buffers_to_ignore == ["0.indices", "2.indices"]
    assert sk.prepare_ddp(sk.sparsify(_pruned(0.8), layout="sell")) == []
    with pytest.raises(TypeError, match="model must be an nn.Module, got Tensor"):
        sk.prepare_ddp(torch.zeros(3))


@pytest.mark.parametrize("layout", ["csc", "sell", "bsr"])
def test_no_cache_outlives_a_load_of_another_pattern(layout):
    """The values Parameter keeps its identity across the load (above): whatever the kernels
    cache per weight (a row-wise repack for N >= 2, the CSC copy for the backward) must
    follow its new data, and a later in-place .data write too."""
    torch.manual_seed(3)
    want = _pruned(0.8, seed=1)
    ckpt = sk.sparsify(copy.deepcopy(want), layout=layout, max_density=1.0).state_dict()
    model = sk.sparsify(_pruned(0.5), layout=layout, max_density=1.0)
    x = torch.randn(8, 64, requires_grad=True)
    model(x).sum().backward()  # builds the caches on the old pattern
    model(x[:1].detach())
    model.load_state_dict(ckpt)
    for inp in (x.detach(), x[:1].detach()):
        torch.testing.assert_close(model(inp), want(inp), rtol=1e-5, atol=1e-5)
    xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    model(xa).sum().backward()
    want(xb).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model[0].values.data.mul_(2)
        want[0].weight.mul_(2)
    torch.testing.assert_close(model(x.detach()), want(x.detach()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("other", [(8, 16), (4, 32), (8, 33)])
def test_load_state_dict_refuses_another_shape(other):
    """As nn.Linear ("size mismatch"): a state of a layer of another shape raises, names both
    shapes, and changes nothing (it was adopted silently: in_features changed under the user)."""
    torch.manual_seed(0)
    src = sk.SparseLinear.from_dense(nn.Linear(other[1], other[0]), layout="csc")
    dst = sk.SparseLinear.from_dense(nn.Linear(32, 8), layout="csc")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r"is of another layer: .*features=\d+ \(this layer: "
                                         r"\d+\).*not its shape or geometry"):
        dst.load_state_dict(src.state_dict())
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    assert (dst.out_features, dst.in_features) == (8, 32)
