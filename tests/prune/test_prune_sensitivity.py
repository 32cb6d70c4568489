"""Sensitivity scan: table, PNG, per-layer ratios from a drop limit, warnings on odd curves."""
import re
import warnings

import pytest
import torch

from sparsekern import prune
from sparsekern.prune import SensitivityTable


@pytest.fixture
def scan(mlp, digits, tmp_path):
    test = digits.loader("test", False, batch_size=512)
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    png = tmp_path / "sens.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = prune.sensitivity_scan(mlp, lambda m: prune.accuracy(m, test),
                                       ratios=[0.3, 0.6, 0.8, 0.95], png=png, progress=False)
    return mlp, table, png, before


def test_scan_produces_table_png_and_restores_the_model(scan):
    model, table, png, before = scan
    assert table.ratios == [0.3, 0.6, 0.8, 0.95]
    assert list(table.curves) == ["fc1", "fc2", "fc3"]
    assert all(len(c) == 4 for c in table.curves.values())
    assert table.baseline > 0.95
    assert table.curves["fc3"][-1] < table.curves["fc3"][0]  # 95% of the classifier hurts
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = table.to_markdown()
    assert "| fc1 |" in md and "95%" in md
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("max_drop", [0.0, 0.01, 0.05, 1.0])
def test_ratios_respect_the_drop_limit(scan, max_drop):
    _, table, _, _ = scan
    ratios = prune.ratios_from_sensitivity(table, max_drop)
    drops = table.drops()
    assert set(ratios) == {"fc1", "fc2", "fc3"}
    for name, r in ratios.items():
        idx = table.ratios.index(r) if r else -1
        assert all(d <= max_drop for d in drops[name][:idx + 1])
        if idx + 1 < len(table.ratios):  # the next ratio would break the limit
            assert drops[name][idx + 1] > max_drop
    if max_drop == 1.0:
        assert all(r == 0.95 for r in ratios.values())


def test_pruning_with_derived_ratios_keeps_accuracy(scan, digits):
    model, table, _, _ = scan
    ratios = prune.ratios_from_sensitivity(table, 0.01)
    layers = [n for n, r in ratios.items() if r > 0]
    prune.prune_model(model, {n: ratios[n] for n in layers})
    acc = prune.accuracy(model, digits.loader("test", False, batch_size=512))
    assert acc >= table.baseline - 0.01 * len(layers) - 0.01


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


def test_warns_on_a_large_drop_below_60_percent(mlp):
    accs = iter([0.9] + [0.1] * 30)
    msgs = _warnings_of(lambda: prune.sensitivity_scan(mlp, lambda m: next(accs),
                                                       ratios=[0.3, 0.9], progress=False))
    assert any(re.search(r"layer 'fc1': the metric already drops by 0\.8 \(baseline 0\.9\) at "
                         r"30% sparsity; a correct pruner rarely hurts this much", m) for m in msgs)


def test_warns_when_nothing_changes_above_90_percent(mlp):
    msgs = _warnings_of(lambda: prune.sensitivity_scan(mlp, lambda m: 0.5, ratios=[0.5, 0.9, 0.95],
                                                       progress=False))
    assert "layer 'fc2': no change at all at >= 90% sparsity; check that the pruned weights " \
           "are really used by the model eval_fn evaluates" in msgs


def test_no_warning_for_a_plausible_curve():
    table = SensitivityTable([0.3, 0.6, 0.9], 0.95, {"a": [0.95, 0.94, 0.7]})
    assert prune.sensitivity.check_curves(table) == []


def test_loss_metric_lower_is_better():
    table = SensitivityTable([0.5, 0.9], 0.2, {"a": [0.21, 0.5]}, higher_is_better=False)
    assert table.drops()["a"] == pytest.approx([0.01, 0.3])
    assert prune.ratios_from_sensitivity(table, 0.05) == {"a": 0.5}


def test_channel_sensitivity_on_a_copy(cnn, digits):
    test = digits.loader("test", True, batch_size=512)
    before = cnn.conv1.weight.shape
    table = prune.sensitivity_scan(cnn, lambda m: prune.accuracy(m, test), ratios=[0.25, 0.5],
                                   granularity="channel", layers=["conv1", "conv2"],
                                   example_input=digits.calib(True, 2), progress=False)
    assert list(table.curves) == ["conv1", "conv2"] and cnn.conv1.weight.shape == before


def test_nan_metrics_are_a_broken_model_not_no_drop():
    """NaN compares false with any max_drop: it used to read as "no drop" and give a layer
    the highest ratio scanned."""
    nan = float("nan")
    t = SensitivityTable(ratios=[0.3, 0.6, 0.9], baseline=1.0,
                         curves={"a": [0.999, nan, 0.2], "b": [nan, nan, nan]})
    assert prune.ratios_from_sensitivity(t, max_drop=0.01) == {"a": 0.3, "b": 0.0}
    t = SensitivityTable(ratios=[0.3, 0.6, 0.9], baseline=nan, curves={"a": [0.9, 0.8, 0.1]})
    assert prune.ratios_from_sensitivity(t, max_drop=0.01) == {"a": 0.0}
    m = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="eval_fn returned NaN for the unpruned model"):
        prune.sensitivity_scan(m, lambda model: nan, ratios=(0.5,), progress=False)


def test_a_single_ratio_is_refused_with_its_fix():
    m = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(TypeError, match=r"ratios must be a sequence of sparsities to sweep, e.g. "
                                        r"\[0.3, 0.5, 0.7\], got 0.5 \(float\); for one ratio "
                                        r"give \[0.5\]"):
        prune.sensitivity_scan(m, lambda model: 1.0, ratios=0.5, progress=False)


class _Residual(torch.nn.Module):
    """c1 and c2 are coupled by a residual add (channel pruning leaves them alone); fc is a
    Linear (kernel granularity leaves it alone)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = h + torch.relu(self.c2(h))
        return self.fc(torch.relu(self.c3(h)).mean((2, 3)))


def test_default_layers_are_those_prune_model_and_channel_prune_prune():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    model = _Residual().eval()
    ev = lambda m: -m(x).pow(2).mean().item()  # noqa: E731
    kw = dict(ratios=[0.5], progress=False, warn=False)
    table = prune.sensitivity_scan(model, ev, granularity="kernel", **kw)
    assert list(table.curves) == ["c1", "c2", "c3"]  # every Conv2d, as prune_model(kernel)
    report = prune.channel_prune(_Residual(), 0.5, example_input=x, warn=False)
    table = prune.sensitivity_scan(model, ev, granularity="channel", example_input=x, **kw)
    assert list(table.curves) == list(report.pruned) == ["c3"]
    assert table.skipped == report.skipped and set(table.skipped) == {"c1", "c2", "fc"}
    with pytest.warns(UserWarning, match=r"sensitivity_scan: channel pruning leaves these "
                                         r"layers alone \(not swept\): c1: add combines it"):
        prune.sensitivity_scan(model, ev, granularity="channel", example_input=x, ratios=[0.5],
                               progress=False)
    # named layers that do not fit still raise
    with pytest.raises(ValueError, match=r"layer 'fc' is a Linear.*kernel granularity prunes "
                                         r"whole kh x kw kernels"):
        prune.sensitivity_scan(model, ev, granularity="kernel", layers=["fc"], **kw)
    with pytest.raises(ValueError, match=r"layer 'c1' cannot be channel-pruned: add combines "
                                         r"it with another tensor"):
        prune.sensitivity_scan(model, ev, granularity="channel", example_input=x,
                               layers=["c1"], **kw)
