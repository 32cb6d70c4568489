"""Prune trained digits models, fine-tune briefly, and recover dense accuracy (within 2 points)."""
import pytest
import torch

import sparsekern as sk
from sparsekern import prune

#: Accuracy points (out of 1) a pruned + fine-tuned model may lose against the dense one.
TOLERANCE = 0.02


def _prune(model, digits, image, how):
    if how == "fine80":
        masks = prune.prune_model(model, 0.8, "fine", "l1", scope="global")
        assert prune.sparsity(model)["total"] == pytest.approx(0.8, abs=1e-3)
        return masks
    if how == "2:4":
        masks = prune.prune_model(model, granularity="2:4")
        for name, mask in masks.items():  # packs as 2:4 (raises otherwise)
            sk.to_sparse(model.get_submodule(name).weight.detach().flatten(1), "2:4")
        return masks
    report = prune.channel_prune(model, 0.5, example_input=digits.calib(image, 8))
    assert report.pruned and all(r.after == r.before // 2 for r in report.pruned.values())
    return None  # channels are gone: fine_tune holds nothing but the (absent) zeros


@pytest.mark.parametrize("how", ["fine80", "2:4", "channel50"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_pruned_model_recovers_after_short_fine_tune(arch, how, digits, request):
    image = arch == "cnn"
    model = request.getfixturevalue(arch)
    test = digits.loader("test", image, batch_size=512)
    dense = prune.accuracy(model, test)
    assert dense > 0.95  # the fixture really trained
    masks = _prune(model, digits, image, how)
    torch.manual_seed(1)
    prune.fine_tune(model, digits.loader("train", image), epochs=3, masks=masks, progress=False)
    tuned = prune.accuracy(model, test)
    assert tuned >= dense - TOLERANCE, (dense, tuned)
    if masks is not None:  # still pruned after fine-tuning
        for name, mask in masks.items():
            assert bool((model.get_submodule(name).weight[~mask] == 0).all()), name


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_channel_pruning_shrinks_params_and_macs(arch, digits, request):
    image = arch == "cnn"
    model = request.getfixturevalue(arch)
    x = digits.calib(image, 4)
    params, macs = prune.count_params(model), prune.count_macs(model, x)["total"]
    out_before = model(x)
    prune.channel_prune(model, 0.5, example_input=x)
    params2, macs2 = prune.count_params(model), prune.count_macs(model, x)["total"]
    assert params2 < 0.5 * params and macs2 < 0.5 * macs, (params, params2, macs, macs2)
    out = model(x)
    assert out.shape == out_before.shape == (4, 10)
    assert torch.isfinite(out).all()


def test_cnn_channel_shapes_after_pruning(cnn, digits):
    report = prune.channel_prune(cnn, 0.5, example_input=digits.calib(True, 2))
    assert (cnn.conv1.out_channels, cnn.bn1.num_features, cnn.conv2.in_channels) == (8, 8, 8)
    assert cnn.conv2.weight.shape == (16, 8, 3, 3) and cnn.bn2.running_mean.shape == (16,)
    assert cnn.fc1.weight.shape == (32, 16 * 16)  # flatten: 16 channels x 4 x 4 pixels
    assert cnn.fc2.weight.shape == (10, 32)
    assert report.pruned["conv2"].consumers == ["fc1"]
    assert report.skipped == {"fc2": "its channels reach the model output"}
    assert "conv1: 16 -> 8 channels" in str(report)


def test_accuracy_gives_back_each_modules_own_train_flag():
    from sparsekern.prune.trainer import accuracy
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    model.train()
    model[1].eval()  # a submodule in its own mode
    acc = accuracy(model, [(torch.randn(5, 4), torch.randint(0, 3, (5,)))])
    assert 0.0 <= acc <= 1.0
    assert model.training and model[0].training and not model[1].training and model[2].training
