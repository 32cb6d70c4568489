"""Criteria find what was planted: dead channels (APoZ), tiny gammas (BN scale), loud inputs
(Wanda); regression-based selection reconstructs better than L1 norms."""
import copy

import pytest
import torch
from torch import nn

from sparsekern import prune
from sparsekern.prune import criteria


@torch.no_grad()
def _kill_channels(conv, bn, channels):
    """After BN + ReLU these channels are always 0: zero weights, very negative BN shift."""
    conv.weight[channels] = 0
    conv.bias[channels] = 0
    bn.running_mean[channels] = 0
    bn.bias[channels] = -5.0


def test_apoz_finds_channels_that_are_always_zero_after_relu(cnn, digits):
    dead = [3, 11]
    _kill_channels(cnn.conv1, cnn.bn1, dead)
    x = digits.calib(True, 64)
    before = cnn(x)
    report = prune.channel_prune(cnn, 2 / 16, criterion="apoz", calib=digits.calib(True),
                                 layers=["conv1"])
    assert report.pruned["conv1"].removed == dead
    assert report.pruned["conv1"].followers == ["bn1"]
    # The removed channels contributed nothing: same outputs, now from 14 channels.
    torch.testing.assert_close(cnn(x), before, rtol=1e-5, atol=1e-5)
    assert cnn.conv2.in_channels == 14


def test_apoz_on_linear_hidden_units(mlp, digits):
    planted = [0, 7, 100]
    with torch.no_grad():
        mlp.fc1.weight[planted] = 0
        mlp.fc1.bias[planted] = -1.0
    x = digits.calib(False)
    with torch.no_grad():  # training leaves some ReLUs dead too: APoZ finds those as well
        dead = sorted(set(torch.nonzero((mlp.fc1(x) <= 0).all(0)).flatten().tolist()))
    assert set(planted) <= set(dead) and len(dead) < 64
    before = mlp(x)
    report = prune.channel_prune(mlp, len(dead) / 256, criterion="apoz", calib=x,
                                 layers=["fc1"])
    assert report.pruned["fc1"].removed == dead
    torch.testing.assert_close(mlp(x), before, rtol=1e-5, atol=1e-5)


def test_bn_scale_finds_channels_with_tiny_gammas(cnn, digits):
    tiny = [5, 20, 30]
    with torch.no_grad():
        cnn.bn2.weight[tiny] = 1e-4
    report = prune.channel_prune(cnn, 3 / 32, criterion="bn_scale",
                                 example_input=digits.calib(True, 2), layers=["conv2"])
    assert report.pruned["conv2"].removed == tiny
    assert cnn.bn2.weight.shape == (29,) and cnn.fc1.in_features == 29 * 16


def test_bn_scale_skips_layers_without_batchnorm(cnn, digits):
    report = prune.channel_prune(cnn, 0.5, criterion="bn_scale",
                                 example_input=digits.calib(True, 2), warn=False)
    assert set(report.pruned) == {"conv1", "conv2"}
    assert report.skipped["fc1"] == "no BatchNorm follows it (criterion 'bn_scale')"


def _consumer_output(model, consumer, x):
    out = []
    h = model.get_submodule(consumer).register_forward_hook(lambda m, a, o: out.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    return out[0]


@pytest.mark.parametrize("arch,producer,consumer", [("cnn", "conv1", "conv2"),
                                                    ("mlp", "fc1", "fc2")])
def test_regression_reconstructs_better_than_l1(arch, producer, consumer, digits, request):
    model = request.getfixturevalue(arch)
    image = arch == "cnn"
    calib = digits.calib(image, 256)
    target = _consumer_output(model, consumer, calib)
    errors = {}
    for crit in ("l1", "regression"):
        m = copy.deepcopy(model)
        prune.channel_prune(m, 0.5, criterion=crit, calib=calib, layers=[producer])
        assert m.get_submodule(consumer).weight.shape[1] * 2 == \
            model.get_submodule(consumer).weight.shape[1]
        errors[crit] = float((_consumer_output(m, consumer, calib) - target).norm() / target.norm())
    assert errors["regression"] < errors["l1"], errors


def test_regression_select_recovers_the_generating_channels():
    torch.manual_seed(0)
    X = torch.randn(500, 6 * 2, dtype=torch.float64)
    W = torch.randn(3, 6 * 2, dtype=torch.float64)
    W[:, [2, 3, 8, 9]] = 0  # channels 1 and 4 (2 columns each) do not matter
    kept, W_new = criteria.regression_select(X, W, group=2, n_keep=4)
    assert kept.tolist() == [0, 2, 3, 5]
    cols = [0, 1, 4, 5, 6, 7, 10, 11]
    torch.testing.assert_close(W_new, W[:, cols])


def test_wanda_keeps_small_weights_on_loud_inputs():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 8).sign())
        lin.weight[:, 0] *= 0.1  # small weights ...
    x = torch.randn(64, 8)
    x[:, 0] *= 100  # ... on an input 100x louder than the others
    model = nn.Sequential(lin)
    l1 = prune.prune_model(copy.deepcopy(model), 0.5, "fine", "l1")["0"]
    wanda = prune.prune_model(copy.deepcopy(model), 0.5, "fine", "wanda", calib=x)["0"]
    assert not l1[:, 0].any() and wanda[:, 0].all()
    assert (wanda.sum(1) == 4).all()  # Wanda compares within each output row


def test_wanda_conv_input_norms_match_im2col():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2)
    x = torch.randn(5, 3, 9, 9)
    norms = criteria.input_column_norms(conv, {"": conv}, [x[:2], x[2:]])[""]
    cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2)  # [5, 27, L]
    torch.testing.assert_close(norms, cols.pow(2).sum((0, 2)).sqrt())
    masks = prune.prune_model(nn.Sequential(conv), granularity="2:4", criterion="wanda", calib=x)
    assert masks["0"].shape == conv.weight.shape


def test_wanda_grouped_conv_norms_per_group():
    conv = nn.Conv2d(4, 6, 1, groups=2)
    x = torch.zeros(2, 4, 3, 3)
    x[:, 1] = 1.0  # only channel 1 (group 0) is nonzero
    norms = criteria.input_column_norms(conv, {"": conv}, x)[""]
    assert norms.shape == (6, 2)
    assert norms[:3, 1].gt(0).all() and norms[:3, 0].eq(0).all() and norms[3:].eq(0).all()


def test_bn_l1_penalty_is_the_sum_of_gammas_and_drives_them_down(cnn, digits):
    gammas = cnn.bn1.weight.abs().sum() + cnn.bn2.weight.abs().sum()
    torch.testing.assert_close(prune.bn_l1_penalty(cnn, 1e-3), 1e-3 * gammas)
    before = float(gammas)
    prune.train(cnn, digits.loader("train", True), epochs=1, lr=1e-3, progress=False,
                penalty=lambda m: prune.bn_l1_penalty(m, 1e-2))
    after = float(cnn.bn1.weight.abs().sum() + cnn.bn2.weight.abs().sum())
    assert after < before


def test_prune_model_channel_granularity_returns_the_report(cnn, digits):
    report = prune.prune_model(cnn, 0.25, "channel", "l2", example_input=digits.calib(True, 2))
    assert isinstance(report, prune.ChannelPruneReport)
    assert (cnn.conv1.out_channels, cnn.conv2.out_channels, cnn.fc1.out_features) == (12, 24, 48)
    assert cnn(digits.calib(True, 3)).shape == (3, 10)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding,stride,dilation", [(1, 1, 1), ((2, 1), 2, 1), ("same", 1, 2)])
def test_im2col_pads_as_the_conv_does(mode, padding, stride, dilation):
    """The calibration columns of a conv (Wanda's norms, SparseGPT's Hessian) are the ones
    it multiplies: with padding_mode reflect/replicate/circular, not zero-padded ones."""
    from sparsekern.prune.criteria import im2col
    conv = nn.Conv2d(3, 5, (3, 2), stride=stride, padding=padding, dilation=dilation,
                     padding_mode=mode, bias=False)
    x = torch.randn(2, 3, 7, 9) + torch.linspace(-3, 3, 9)  # edges differ from zeros
    cols = im2col(conv, x)  # [N, 3*3*2, L]
    y = conv(x)
    got = (conv.weight.reshape(5, -1) @ cols).reshape(y.shape)
    torch.testing.assert_close(got, y, rtol=1e-5, atol=1e-5)


def test_regression_refit_never_moves_what_the_calibration_rows_leave_open():
    """Fewer calibration rows than kept columns: the least-squares refit is underdetermined.
    With the dropped channels dead, the kept weights already reconstruct the output, and the
    refit must return them (it returned a null-space solution that was 4.8% off on new
    inputs). With enough rows and live channels, the refit still beats plain dropping."""
    from sparsekern.prune.criteria import regression_select
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 40, generator=g)
    W[:, :8] = 0.0  # 8 dead input channels
    X = torch.randn(12, 40, generator=g)  # 12 rows < 32 kept columns
    kept, W_new = regression_select(X, W, group=1, n_keep=32)
    assert kept.tolist() == list(range(8, 40))
    torch.testing.assert_close(W_new, W[:, 8:], rtol=1e-6, atol=1e-6)
    Xn = torch.randn(100, 40, generator=g)  # new inputs: the same outputs
    torch.testing.assert_close(Xn[:, kept] @ W_new.t(), Xn @ W.t(), rtol=1e-5, atol=1e-5)

    W = torch.randn(10, 40, generator=g)  # live channels, correlated inputs, many rows
    X = torch.randn(400, 40, generator=g)
    X[:, 20:] = X[:, :20] + 0.1 * torch.randn(400, 20, generator=g)
    kept, W_new = regression_select(X, W, group=1, n_keep=24)
    Y = X @ W.t()
    refit = (X[:, kept] @ W_new.t() - Y).norm()
    dropped = (X[:, kept] @ W[:, kept].t() - Y).norm()
    assert refit < 0.9 * dropped
