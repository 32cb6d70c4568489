"""SparseConv2d: equals the masked nn.Conv2d for every geometry and layout; state; rejections."""
import io

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.conv import SparseConv2d
from sparsekern.formats import layouts

GEOMETRIES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=1),
    dict(kernel_size=1, stride=2),
    dict(kernel_size=1, padding=1),
    dict(kernel_size=3, stride=2, padding=2, dilation=2),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=4, padding="same"),
    dict(kernel_size=3, padding="valid", bias=False),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=2, padding_mode="circular"),
    dict(kernel_size=3, padding=1, padding_mode="replicate", bias=False),
    dict(kernel_size=5, padding=2),
]


def _pruned_conv(cin, cout, layout, seed=0, **geometry):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, **geometry)
    W = conv.weight.detach().reshape(cout, -1)
    if layout == "2:4":  # keep the 2 largest of every 4 along K
        K = W.shape[1]
        Kp = -(-K // 4) * 4
        Wp = torch.nn.functional.pad(W.abs(), (0, Kp - K), value=-1.0).reshape(cout, -1, 4)
        keep = torch.zeros_like(Wp, dtype=torch.bool).scatter_(-1, Wp.topk(2, -1).indices, True)
        mask = keep.reshape(cout, Kp)[:, :K]
    elif layout == "bsr":
        mask = (torch.rand(cout, 1) > 0.4).expand_as(W)
    elif layout == "csc":
        mask = torch.rand_like(W) > 0.75
    else:  # any other registered layout: its own magnitude pruning
        mask = layouts.get(layout).magnitude_prune(W, 0.75, None) != 0
    with torch.no_grad():
        conv.weight.mul_(mask.reshape(conv.weight.shape))
    return conv


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


@pytest.mark.parametrize("layout", layouts.names())
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: ",".join(f"{k}={v}" for k, v in
                                                                         g.items()))
def test_matches_masked_dense_conv(geometry, layout, poison_output):
    conv = _pruned_conv(6, 5, layout, **geometry)
    bs = (2, 3) if layout == "bsr" else None
    sparse = SparseConv2d.from_dense(conv, layout=layout, blocksize=bs)
    for x in (torch.randn(3, 6, 9, 8), torch.randn(1, 6, 7, 7)):
        y = conv(x)
        out = sparse(x)
        assert out.shape == y.shape and out.is_contiguous()
        assert _rel(out, y) < 1e-5


def test_unbatched_input_and_float64():
    conv = _pruned_conv(4, 8, "csc", kernel_size=3, padding=1).double()
    sparse = SparseConv2d.from_dense(conv, layout="csc")
    x = torch.randn(4, 6, 6, dtype=torch.float64)
    assert sparse(x).shape == (8, 6, 6)
    assert _rel(sparse(x), conv(x)) < 1e-12


def test_density_zero_and_one():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    dense = SparseConv2d.from_dense(conv, layout="csc")  # nothing pruned: all stored
    assert _rel(dense(x), conv(x)) < 1e-5
    with torch.no_grad():
        conv.weight.zero_()
    empty = SparseConv2d.from_dense(conv, layout="csc")
    assert empty.values.numel() == 0
    torch.testing.assert_close(empty(x), conv(x))  # just the bias


def test_gradients_match_dense():
    conv = _pruned_conv(4, 6, "2:4", kernel_size=3, padding=1, stride=2)
    sparse = SparseConv2d.from_dense(conv, layout="2:4")
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(2, 6, 4, 4)
    (sparse(x) * g).sum().backward()
    (conv(x2) * g).sum().backward()
    assert _rel(x.grad, x2.grad) < 1e-5
    assert _rel(sparse.bias.grad, conv.bias.grad) < 1e-5
    # values' gradient = the dense weight gradient at the stored positions
    grad_dense = sk.to_sparse(conv.weight.grad.reshape(6, -1) *
                              (conv.weight.reshape(6, -1) != 0), "2:4")
    stored = sparse.values.detach() != 0
    assert _rel(sparse.values.grad[stored], grad_dense.values[stored]) < 1e-5


@pytest.mark.parametrize("layout", layouts.names())
def test_state_dict_round_trip_weights_only(layout):
    conv = _pruned_conv(6, 5, layout, kernel_size=3, stride=2, padding=1, padding_mode="reflect")
    sparse = SparseConv2d.from_dense(conv, layout=layout,
                                     blocksize=(2, 3) if layout == "bsr" else None)
    buf = io.BytesIO()
    torch.save(sparse.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    # Another pattern and layout come from the state; the geometry must be the layer's own.
    other = SparseConv2d.from_dense(_pruned_conv(6, 5, "csc", seed=1, kernel_size=3, stride=2,
                                                 padding=1, padding_mode="reflect"), "csc")
    other.load_state_dict(state)
    assert (other.layout, other.stride, other.padding, other.padding_mode) == \
        (layout, (2, 2), (1, 1), "reflect")
    x = torch.randn(2, 6, 8, 8)
    assert torch.equal(other(x), sparse(x))


@pytest.mark.parametrize("change", [{"stride": 1}, {"padding": 0}, {"padding_mode": "zeros"},
                                    {"dilation": 2}, {"kernel_size": 2}, {"out": 7}, {"cin": 4}])
def test_load_state_dict_refuses_another_geometry(change):
    """As nn.Conv2d (which keeps its geometry and refuses another shape): a state of a conv
    with another geometry or shape raises, names the field, and changes nothing."""
    geo = dict(kernel_size=3, stride=2, padding=1, padding_mode="reflect", dilation=1)
    src = SparseConv2d.from_dense(_pruned_conv(6, 5, "csc", **geo), "csc")
    out, cin = change.pop("out", 5), change.pop("cin", 6)
    dst = SparseConv2d.from_dense(_pruned_conv(cin, out, "csc", seed=1, **{**geo, **change}),
                                  "csc")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    field = next(iter(change), "out_channels" if out != 5 else "in_channels")
    with pytest.raises(ValueError, match=rf"is of another layer: .*{field}=.*load_state_dict "
                                         rf"changes a packed layer's sparsity and layout, not "
                                         rf"its shape or geometry"):
        dst.load_state_dict(src.state_dict())
    after = dst.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_to_dense_and_repr():
    conv = _pruned_conv(4, 6, "csc", kernel_size=3, padding=1, dilation=1)
    sparse = SparseConv2d.from_dense(conv, layout="csc")
    back = sparse.to_dense()
    assert torch.equal(back.weight, conv.weight) and torch.equal(back.bias, conv.bias)
    assert "layout='csc'" in repr(sparse) and "kernel_size=(3, 3)" in repr(sparse)
    assert sparse.weight.shape == (6, 36)


def test_corrupt_state_is_rejected():
    sparse = SparseConv2d.from_dense(_pruned_conv(4, 4, "csc", kernel_size=1), "csc")
    state = sparse.state_dict()
    state["indices"] = torch.full_like(state["indices"], 99)
    with pytest.raises((ValueError, RuntimeError), match=r"indices|row"):
        sparse.load_state_dict(state)


# -- rejections --------------------------------------------------------------------------------

def test_grouped_conv_is_rejected():
    with pytest.raises(ValueError, match=r"SparseConv2d supports groups=1 only; this Conv2d has "
                                         r"groups=2 \(keep grouped/depthwise convs dense\)"):
        SparseConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2), "csc")


def test_not_a_conv_or_not_a_pattern():
    with pytest.raises(TypeError, match=r"conv must be an nn\.Conv2d, got Linear"):
        SparseConv2d.from_dense(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"W is not 2:4 sparse"):
        SparseConv2d.from_dense(nn.Conv2d(4, 4, 3), "2:4")
    with pytest.raises(TypeError, match=r"weight must be a packed sparse matrix"):
        SparseConv2d(torch.zeros(2, 2), 2, 1)


def test_bad_geometry():
    fmt = sk.to_sparse(torch.zeros(4, 27), "csc")
    with pytest.raises(ValueError, match=r"weight has shape \[4, 27\]; expected \[out_channels, "
                                         r"in_channels\*kh\*kw\] = \[4, 18\] for in_channels=2, "
                                         r"kernel_size=\(3, 3\)"):
        SparseConv2d(fmt, 2, 3)
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1, got stride=\(2, 2\)"):
        SparseConv2d(fmt, 3, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"padding must be an int, a pair, 'same' or 'valid'; got "
                                         r"'full'"):
        SparseConv2d(fmt, 3, 3, padding="full")
    with pytest.raises(ValueError, match=r"padding_mode must be one of .* got 'mirror'"):
        SparseConv2d(fmt, 3, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"stride must be an int or a pair of ints, got 'x'"):
        SparseConv2d(fmt, 3, 3, stride="x")
    with pytest.raises(ValueError, match=r"bias has shape \[3\]; expected \[4\]"):
        SparseConv2d(fmt, 3, 3, bias=torch.zeros(3))


def test_bad_input():
    sparse = SparseConv2d.from_dense(_pruned_conv(4, 4, "csc", kernel_size=3), "csc")
    with pytest.raises(ValueError, match=r"x has shape \[2, 3, 5, 5\]; expected \[N, 4, H, W\] or "
                                         r"\[4, H, W\]"):
        sparse(torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"x has shape \[1, 4, 2, 2\]: too small for kernel_size "
                                         r"\(3, 3\)"):
        sparse(torch.zeros(1, 4, 2, 2))


def test_wrong_channels_name_the_layer():
    """Deep in a model, "expected [N, 3, H, W]" did not say which layer expected it."""
    sparse = SparseConv2d.from_dense(_pruned_conv(3, 8, "csc", kernel_size=3), "csc")
    with pytest.raises(ValueError, match=r"x has shape \[2, 4, 9, 9\]; expected \[N, 3, H, W\] "
                                         r"or \[3, H, W\] for SparseConv2d\(3, 8, "
                                         r"kernel_size=\(3, 3\), stride=\(1, 1\)"):
        sparse(torch.zeros(2, 4, 9, 9))
    with pytest.raises(ValueError, match=r"x has shape \[4, 9, 9\]; .* for SparseConv2d\(3, 8, "):
        sparse(torch.zeros(4, 9, 9))


def test_load_state_dict_of_a_model_names_the_rejected_conv():
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), _pruned_conv(4, 4, "csc", kernel_size=1))
    model[2] = SparseConv2d.from_dense(model[2], "csc")
    state = model.state_dict()
    state["2.indices"] = torch.full_like(state["2.indices"], 99)
    with pytest.raises(ValueError, match=r"^layer '2': csc row indices\[0\]=99 is out of range"):
        model.load_state_dict(state)
