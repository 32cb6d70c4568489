"""Layers that sparsekern.prune must not write into silently: torch.nn.utils.prune's
reparametrized weight (recomputed before every forward) and the linear-like layers the
default selection leaves out (which it now logs)."""
import copy
import logging

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

import sparsekern as sk
from sparsekern import prune


def _torch_pruned():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    tprune.l1_unstructured(m[0], "weight", amount=0.3)
    return m


def test_prune_model_rejects_a_torch_pruned_layer_and_names_the_fix():
    """prune_model wrote its 2:4 zeros into the derived weight, which the next forward
    recomputed as weight_orig * weight_mask: masks and sparsity said pruned, the model ran
    its old weights."""
    m = _torch_pruned()
    before = m[0].weight.detach().clone()
    for layers in (None, ["0"]):
        with pytest.raises(ValueError, match=r"layer '0' carries torch.nn.utils.prune's "
                                             r"reparametrization .*prune.remove\("):
            prune.prune_model(m, granularity="2:4", layers=layers)
    assert torch.equal(m[0].weight, before)  # nothing written
    with pytest.raises(ValueError, match="reparametrization"):
        prune.sensitivity_scan(m, lambda mod: 0.0, ratios=[0.5], layers=["0"])
    # reading is fine, and after prune.remove the pruning works and lasts
    assert prune.sparsity(m)["0"] == pytest.approx(0.3, abs=0.01)
    tprune.remove(m[0], "weight")
    prune.prune_model(m, granularity="2:4")
    x = torch.randn(5, 16)
    with torch.no_grad():
        y = m(x)
    assert prune.sparsity(m)["0"] >= 0.5
    s = sk.sparsify(m, layout="2:4")
    torch.testing.assert_close(s(x), y)


def test_default_selection_logs_the_linear_layers_it_leaves_out(caplog):
    enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    with caplog.at_level(logging.INFO, logger="sparsekern.prune"):
        masks = prune.prune_model(enc, 0.5)
    assert "self_attn.out_proj" not in masks and "linear1" in masks
    assert any("self_attn.out_proj left out: NonDynamicallyQuantizableLinear subclasses "
               "nn.Linear" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm"])
def test_prune_model_rejects_legacy_weight_norm_and_spectral_norm(wrap):
    """Both recompute weight in a forward pre-hook: the zeros did not last (weight_norm) or
    reached weight_orig and changed sigma (spectral_norm); outputs of the sparsified model
    differed from the "pruned" dense one by up to 44."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    getattr(nn.utils, wrap)(m[0])
    with pytest.raises(ValueError, match=r"layer '0' carries a reparametrization \(weight "
                                         r"derived from .*remove_weight_norm"):
        prune.prune_model(m, granularity="2:4")
    getattr(nn.utils, "remove_" + wrap)(m[0])
    prune.prune_model(m, granularity="2:4")
    assert prune.sparsity(m)["0"] >= 0.5


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
@pytest.mark.parametrize("sequential", [True, False])
def test_calibration_through_nested_tensors_of_a_transformer_encoder(sequential):
    """nn.TransformerEncoder in eval mode turns a padded batch into a nested tensor: the
    calibration hooks read its .shape ("NestedTensorImpl doesn't support sizes"). Its rows
    are the real tokens, so Wanda's masks equal those of the sequences run unpadded."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2)
    enc.eval()
    x = torch.randn(2, 9, 32)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    a, b = copy.deepcopy(enc), copy.deepcopy(enc)
    got = prune.prune_model(a, 0.5, criterion="wanda", sequential=sequential,
                            calib=[sk.Args(x, src_key_padding_mask=pad)])
    want = prune.prune_model(b, 0.5, criterion="wanda", sequential=sequential,
                             calib=[sk.Args(x[:1]), sk.Args(x[1:, :6])])
    assert got.keys() == want.keys() and "layers.0.linear1" in got
    for n in got:
        assert torch.equal(got[n], want[n]), n
    c = copy.deepcopy(enc)
    prune.prune_model(c, 0.5, criterion="sparsegpt",  # always sequential
                      calib=[sk.Args(x, src_key_padding_mask=pad)])
    assert prune.sparsity(c)["total"] == pytest.approx(0.5, abs=0.01)


def test_naming_a_linear_subclass_says_why_it_is_left_out():
    enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    with pytest.raises(ValueError, match=r"'self_attn.out_proj' is a "
                                         r"NonDynamicallyQuantizableLinear; .*subclasses "
                                         r"nn.Linear; only nn.Linear itself"):
        prune.prune_model(enc, 0.5, layers=["self_attn.out_proj"])
