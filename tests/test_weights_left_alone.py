"""Weights of 3 or more dims outside any Linear-like layer (a mixture of experts' stacked
[E, out, in] parameter, as in transformers' MoE blocks) are named in sparsify's and
prune.convert's report and in the INFO log as left alone; nothing about what is pruned or
packed changes."""
import logging
import warnings

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import _layers, prune
from sparsekern.nn import SparseLinear

REASON = ("3-D stack of weight matrices (4, 16, 16) (e.g. experts): not a Linear-like layer; "
          "not pruned")


class Experts(nn.Module):
    """E experts as one [E, out, in] weight (and a 2-D [E, out] bias), top-1 routed."""

    def __init__(self, num_experts=4, d_in=16, d_out=16):
        super().__init__()
        self.experts_w = nn.Parameter(torch.randn(num_experts, d_out, d_in))
        self.experts_b = nn.Parameter(torch.randn(num_experts, d_out))

    def forward(self, x, expert):
        # x [T, in], expert [T] (int64) -> [T, out]
        return torch.einsum("toi,ti->to", self.experts_w[expert], x) + self.experts_b[expert]


class MoE(nn.Module):
    """router (nn.Linear) -> top-1 expert; a Conv2d (4-D weight: a layer, not listed) on the
    side; a 3-D experts weight."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(16, 16)
        self.router = nn.Linear(16, 4)
        self.moe = Experts()
        self.conv = nn.Conv2d(4, 8, 3)

    def forward(self, x):
        h = self.proj(x)
        return self.moe(h, self.router(h).argmax(-1))


def test_weights_left_alone_lists_3d_parameters_outside_linear_like_layers():
    model = MoE()
    model.bilinear = nn.Bilinear(4, 4, 2)      # a 3-D weight, but a layer: reported as one
    model.shared = model.moe                    # one module under two names: listed once
    assert _layers.weights_left_alone(model) == {"moe.experts_w": REASON}
    model.moe.rank4 = nn.Parameter(torch.zeros(2, 2, 2, 2))
    assert _layers.weights_left_alone(model)["moe.rank4"] == \
        "4-D stack of weight matrices (2, 2, 2, 2) (e.g. experts): not a Linear-like layer; " \
        "not pruned"
    assert _layers.weights_left_alone(Experts()) == {"experts_w": REASON}


def test_sparsify_reports_and_logs_the_expert_weight_it_leaves_alone(caplog):
    model = MoE()
    prune.prune_model(model, granularity="2:4", layers=["proj", "router"])
    experts = model.moe.experts_w.detach().clone()
    x = torch.randn(5, 16)
    ref = model(x)
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        sparse = sk.sparsify(model, "2:4")
    assert sparse.sparsekern_report["moe.experts_w"] == ("dense", REASON)
    assert f"sparsify: moe.experts_w stays dense ({REASON})" in caplog.text
    # what is packed is as before: the two pruned Linears; the experts weight is untouched
    assert {n for n, m in sparse.named_modules() if isinstance(m, SparseLinear)} == \
        {"proj", "router"}
    assert sparse.moe.experts_w is model.moe.experts_w
    assert torch.equal(sparse.moe.experts_w, experts)
    torch.testing.assert_close(sparse(x), ref)
    # named layers only: the report keeps to them
    named = MoE()
    prune.prune_model(named, granularity="2:4", layers=["proj"])
    assert sk.sparsify(named, "2:4", layers=["proj"]).sparsekern_report == \
        {"proj": ("2:4", "weight is 2:4 sparse")}


def test_convert_reports_the_expert_weight_and_prunes_what_it_pruned_before(caplog):
    model = MoE()
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        masks = prune.prune_model(model, granularity="2:4")
    assert set(masks) == {"proj", "router", "conv"}  # the prunable layers, as before
    assert any(r.name == "sparsekern.prune" and
               r.getMessage() == f"moe.experts_w left out: {REASON}" for r in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layer to pack: no "nothing to pack" warning
        sparse = prune.convert(model, "2:4")
    assert sparse.sparsekern_report["moe.experts_w"] == ("dense", REASON)
    assert {n: r[0] for n, r in sparse.sparsekern_report.items()} == \
        {"proj": "2:4", "router": "2:4", "conv": "2:4", "moe.experts_w": "dense"}
    assert (sparse.moe.experts_w != 0).all()


def test_a_model_of_expert_weights_only_names_them_when_nothing_can_be_pruned():
    with pytest.raises(ValueError, match=r"model Experts has no prunable layers: expected at "
                                         r"least one nn\.Linear or nn\.Conv2d \(or a "
                                         r"transformers Conv1D\); its layers are: Experts; left "
                                         r"out: experts_w \(3-D stack of weight matrices "
                                         r"\(4, 16, 16\) \(e.g. experts\): not a "
                                         r"Linear-like layer; not pruned\)"):
        prune.prune_model(Experts(), 0.5)
    model = Experts()
    with pytest.warns(UserWarning, match=r"sparsify: Experts has no layer that sparsekern can "
                                         r"pack .*; its layers are: Experts; experts_w left "
                                         r"alone: 3-D stack of weight matrices \(4, 16, 16\) "
                                         r"\(e.g. experts\): not a Linear-like layer; "
                                         r"not pruned"):
        sk.sparsify(model, "2:4")
    assert model.sparsekern_report == {"experts_w": ("dense", REASON)}


class ViTish(nn.Module):
    """A ViT's 3-D parameters that are no stack of matrices: cls_token [1, 1, D] and
    position embeddings [1, T, D] (and a [2, 1, D] pair of tokens)."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, 16))
        self.position_embeddings = nn.Parameter(torch.randn(1, 5, 16))
        self.pair = nn.Parameter(torch.randn(2, 1, 16))
        self.proj = nn.Linear(16, 16)

    def forward(self, x):  # x [B, 4, 16]
        x = torch.cat([self.cls_token.expand(len(x), 1, 16), x], 1) + self.position_embeddings
        return self.proj(x)


def test_embeddings_and_tokens_are_not_named_as_weights_left_alone():
    model = ViTish()
    assert _layers.weights_left_alone(model) == {}
    prune.prune_model(model, 0.9)
    sparse = sk.sparsify(model, "csc")
    assert set(sparse.sparsekern_report) == {"proj"}
