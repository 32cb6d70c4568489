"""Masks -> formats -> sparse layers: same outputs as the masked dense model; save/load."""
import copy

import pytest
import torch

import sparsekern as sk
from sparsekern import prune
from sparsekern.conv import SparseConv2d
from sparsekern.nn import SparseLinear

from .models import CNN, MLP


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


# layout="auto" is left out: it picks formats from latencies measured on the machine.
CASES = [  # (granularity, ratio, convert layout, blocksize, expected layout)
    ("2:4", None, "2:4", None, "2:4"),
    ("1:4", None, "2:4", None, "2:4"),
    ("fine", 0.8, "csc", None, "csc"),
    ((1, 8), 0.75, "bsr", (1, 8), "bsr"),
    ((4, 4), 0.75, "bsr", (4, 4), "bsr"),
]


@pytest.mark.parametrize("gran,ratio,layout,bs,expected", CASES)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_converted_model_matches_masked_dense(arch, gran, ratio, layout, bs, expected, digits,
                                              request):
    model = request.getfixturevalue(arch)
    x = digits.calib(arch == "cnn", 32)
    masks = prune.prune_model(model, ratio, gran)
    ref = model(x)
    sparse = prune.convert(copy.deepcopy(model), layout=layout, blocksize=bs,
                           max_density=1.0 if layout == "bsr" else None)
    layers = {n: type(m) for n, m in sparse.named_modules() if n in masks}
    if arch == "cnn":
        conv_layers = [n for n in layers if n.startswith("conv")]
        assert conv_layers and all(layers[n] is SparseConv2d for n in conv_layers), layers
    assert any(t is SparseLinear for t in layers.values()), layers
    assert all(v[0] in (expected, "dense") for v in sparse.sparsekern_report.values())
    with torch.no_grad():
        out = sparse(x)
    assert _rel(out, ref) < 1e-5


def test_convert_applies_masks_and_swaps_a_bare_layer():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 4, 3, padding=1)
    masks = prune.prune_model(torch.nn.Sequential(conv), granularity="2:4", apply=False)
    sparse = prune.convert(conv, layout="2:4", masks={"": masks["0"]})
    assert isinstance(sparse, SparseConv2d) and sparse.layout == "2:4"
    x = torch.randn(2, 8, 5, 5)
    assert _rel(sparse(x), conv(x)) < 1e-5  # conv was masked in place first


def test_grouped_conv_stays_dense():
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2))
    prune.prune_model(model, 0.9)
    out = prune.convert(model, layout="csc")
    assert type(out[0]) is torch.nn.Conv2d
    assert out.sparsekern_report["0"] == ("dense", "grouped Conv2d (groups=2) is kept dense")


def test_dense_enough_layers_stay_dense(mlp):
    prune.prune_model(mlp, 0.3)
    out = prune.convert(mlp, layout="csc")  # stored fraction 0.7 > max_density 0.3
    assert all(type(m) is torch.nn.Linear for m in (out.fc1, out.fc2, out.fc3))
    assert out.sparsekern_report["fc1"] == ("dense", "stored fraction 0.7 > 0.3 (csc's default max_density)")
    out = prune.convert(mlp, layout="csc", max_density=0.8, layers=["fc2"])
    assert type(out.fc2) is SparseLinear and type(out.fc1) is torch.nn.Linear


@pytest.mark.parametrize("arch,gran,ratio,layout", [
    ("mlp", "2:4", None, "2:4"), ("mlp", "fine", 0.8, "csc"), ("mlp", (4, 4), 0.8, "bsr"),
    ("cnn", "2:4", None, "2:4"), ("cnn", "fine", 0.8, "csc"), ("cnn", (4, 4), 0.8, "bsr")])
def test_save_load_round_trip_into_a_fresh_model(arch, gran, ratio, layout, digits, tmp_path,
                                                 request):
    model = request.getfixturevalue(arch)
    x = digits.calib(arch == "cnn", 16)
    prune.prune_model(model, ratio, gran)
    sparse = prune.convert(model, layout, blocksize=(4, 4) if layout == "bsr" else None)
    path = tmp_path / "m.pt"
    prune.save_sparse(sparse, path)
    blob = torch.load(path, weights_only=True)
    assert blob["sparse"] and (arch == "mlp" or blob["sparse_conv2d"])
    torch.manual_seed(123)
    fresh = prune.load_sparse(MLP() if arch == "mlp" else CNN(), path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), sparse(x))
    kinds = {type(m) for m in fresh.modules()}
    assert SparseLinear in kinds and (arch == "mlp" or SparseConv2d in kinds)


def test_reads_files_of_sk_save_sparse(mlp, tmp_path):
    prune.prune_model(mlp, granularity="2:4")
    sparse = prune.convert(mlp, "2:4")
    sk.save_sparse(sparse, tmp_path / "a.pt")
    fresh = prune.load_sparse(MLP(), tmp_path / "a.pt").eval()
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), sparse(x))


def test_load_rejects_a_mismatched_model(cnn, tmp_path):
    prune.prune_model(cnn, granularity="2:4")
    prune.save_sparse(prune.convert(cnn, "2:4"), tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"layer 'conv1': saved Conv2d \[out, in, kh, kw\] = "
                                         r"\[16, 1, 3, 3\] but the model has \[8, 1, 3, 3\]"):
        prune.load_sparse(CNN(c1=8), tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"layer 'fc1': saved shape \[64, 512\] but the model "
                                         r"has \[64, 256\]"):
        prune.load_sparse(CNN(c2=16), tmp_path / "c.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")  # a plain state_dict, not CNN's
    with pytest.raises(ValueError, match=r"state does not match the model: missing "
                                         r"\['conv1\.weight', .*\], unexpected \['x'\]"):
        prune.load_sparse(CNN(), tmp_path / "other.pt")
    torch.save(["not", "a", "state_dict"], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt is not a file written by "
                                         r"sparsekern\.save_sparse nor a state_dict"):
        prune.load_sparse(CNN(), tmp_path / "list.pt")


def test_load_rejects_a_conv_entry_where_the_model_has_something_else(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1))
    prune.prune_model(model, granularity="2:4")
    prune.save_sparse(prune.convert(model, "2:4"), tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"the saved sparse layer '0' is a Conv2d, but the model "
                                         r"has a Linear there"):
        prune.load_sparse(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"the saved sparse layer '0' does not exist in Identity"):
        prune.load_sparse(torch.nn.Identity(), tmp_path / "c.pt")


def test_converted_model_trains_on_the_fixed_pattern(mlp, digits):
    prune.prune_model(mlp, granularity="2:4")
    sparse = prune.convert(mlp, "2:4")
    before = sparse.fc1.values.detach().clone()
    prune.train(sparse, digits.loader("train", False), epochs=1, lr=1e-3, progress=False)
    assert not torch.equal(before, sparse.fc1.values)
