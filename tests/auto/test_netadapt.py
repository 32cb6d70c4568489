"""NetAdapt with a fake latency table: deterministic, no timing."""
import pytest
import torch
from torch import nn

from sparsekern import prune
from sparsekern.auto.netadapt import budgets, netadapt
from sparsekern.auto.table import LatencyTable, LayerLatency


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def _table(two_four=None):
    """Layer "2" dominates; "0" is cheaper; sparse "4" is slower than dense."""
    def e(dense, curves):
        return {"s": LayerLatency.synthetic(dense, curves)}
    l2 = {"csc": [(0.0, 0.2), (1.0, 4.2)]}
    if two_four is not None:
        l2["2:4"] = [(0.5, two_four)]
    return LatencyTable(["s"], {"0": e(1.0, {"csc": [(0.0, 0.1), (1.0, 1.1)]}),
                                "2": e(4.0, l2),
                                "4": e(0.1, {"csc": [(0.0, 1.0), (1.0, 2.0)]})},
                        {"s": 0.5}, {"s": 5.6})


def _metric(model):
    """Higher is better; layer "0" is five times as sensitive as layer "2"."""
    s = prune.sparsity(model)
    return 1.0 - 0.5 * s["0"] ** 2 - 0.1 * s["2"] ** 2 - 2.0 * s["4"] ** 2


class Calls:
    def __init__(self):
        self.short = 0
        self.final = 0

    def finetune(self, m):
        self.short += 1
        with torch.no_grad():  # a "training" that touches every weight: masks must win
            for p in m.parameters():
                p.add_(0.01)

    def final_ft(self, m):
        self.final += 1


def test_budgets():
    t = _table()
    assert budgets(t, target_speedup=2.0) == {"s": pytest.approx(2.8)}
    assert budgets(t, target_speedup={"s": 4.0}) == {"s": pytest.approx(1.4)}
    assert budgets(t, target_latency_s=[1.0]) == {"s": 1.0}
    with pytest.raises(ValueError, match="give exactly one of target_speedup and target_latency_s"):
        budgets(t)
    with pytest.raises(ValueError, match=r"target_speedup has 2 values for 1 shapes \['s'\]"):
        budgets(t, target_speedup=[2.0, 3.0])
    with pytest.raises(ValueError, match="target_speedup at s must be a positive number"):
        budgets(t, target_speedup=0)


def test_budgets_use_the_predicted_dense_model_not_one_noisy_timing():
    t = _table()
    t.model_s["s"] = 9.9  # a whole-model timing taken in a slow moment
    assert budgets(t, target_speedup=2.0) == {"s": pytest.approx(5.6 / 2.0)}


def test_reaches_the_target_pruning_the_cheapest_layer():
    model, calls = _model(), Calls()
    r = netadapt(model, _table(), _metric, target_speedup=2.0, finetune_fn=calls.finetune,
                 final_finetune_fn=calls.final_ft)
    assert r.reached and r.reason.startswith("the predicted latency meets the budget")
    assert r.predicted_s["s"] <= r.budget_s["s"]
    assert r.history and all(h["winner"]["layer"] == "2" for h in r.history)
    ratios = [h["winner"]["ratio"] for h in r.history]
    assert ratios == sorted(ratios)  # each step prunes the layer further
    assert r.plans["2"].granularity == "fine" and r.plans["0"].ratio == 0.0
    assert r.decisions["2"].format == "csc" and r.decisions["4"].format == "dense"
    # the model holds the winner: pruned weights exactly zero despite the "training"
    W = model[2].weight
    assert torch.equal(W == 0, ~r.masks["2"])
    assert float((W == 0).float().mean()) == pytest.approx(r.plans["2"].ratio, abs=1e-3)
    assert calls.short == sum(len(h["candidates"]) for h in r.history)
    assert calls.final == 1
    assert r.metric_dense == 1.0 and r.metric_final == pytest.approx(_metric(model))


def test_deterministic():
    a = netadapt(_model(), _table(), _metric, target_speedup=2.0)
    b = netadapt(_model(), _table(), _metric, target_speedup=2.0)
    assert [h["winner"] for h in a.history] == [h["winner"] for h in b.history]


def test_first_ask_is_a_fraction_of_the_way():
    r = netadapt(_model(), _table(), _metric, target_speedup=2.0, steps=5)
    first = r.history[0]
    assert first["ask"] == pytest.approx((5.6 / 2.8 - 1.0) / 5)
    # the smallest ratio of layer "2" whose predicted cut reaches the ask: 0.2 + 4d <= 4 - 0.56
    assert first["winner"]["ratio"] == pytest.approx(0.19, abs=0.011)
    assert {c["layer"] for c in first["candidates"]} == {"0", "2"}  # "4" cannot cut anything


def test_unreachable_target_stops_with_a_reason():
    r = netadapt(_model(), _table(), _metric, target_speedup=50.0, max_ratio=0.9)
    assert not r.reached
    assert "no layer can be pruned further" in r.reason
    assert r.plans["2"].ratio == pytest.approx(0.9) and r.plans["0"].ratio == pytest.approx(0.9)


def test_min_metric_stops_before_a_bad_candidate():
    model = _model()
    r = netadapt(model, _table(), _metric, target_speedup=2.0, min_metric=0.9999,
                 max_rejections=2)
    assert not r.reached and "worse than min_metric" in r.reason
    assert [h["accepted"] for h in r.history] == [False] * 3
    asks = [h["ask"] for h in r.history]
    assert asks[1] == pytest.approx(asks[0] / 2) and asks[2] == pytest.approx(asks[0] / 4)
    assert not r.masks and float((model[2].weight == 0).float().mean()) == 0.0


def test_n_m_granularity_uses_the_two_four_format():
    model = _model()
    r = netadapt(model, _table(two_four=1.0), _metric, target_speedup=1.5, granularities=("2:4",))
    assert r.reached
    assert r.plans["2"] .granularity == "2:4" and r.decisions["2"].format == "2:4"
    W = model[2].weight.detach()
    assert int((W.reshape(32, 8, 4) != 0).sum(-1).max()) <= 2


def test_layers_and_granularities_are_checked():
    with pytest.raises(ValueError, match=r"layers \['9'\] are not in the latency table"):
        netadapt(_model(), _table(), _metric, target_speedup=2.0, layers=["9"])
    with pytest.raises(ValueError, match="granularity 'kernel' is not supported"):
        netadapt(_model(), _table(), _metric, target_speedup=2.0, granularities=("kernel",))
    with pytest.raises(ValueError, match="granularities is empty"):
        netadapt(_model(), _table(), _metric, target_speedup=2.0, granularities=())


def test_rejected_step_is_retried_smaller():
    r = netadapt(_model(), _table(), _metric, target_speedup=2.0, min_metric=0.998)
    assert r.history[0]["accepted"] is False and r.history[1]["accepted"] is True
    assert r.history[1]["ask"] == pytest.approx(r.history[0]["ask"] / 2)
    assert r.history[1]["winner"]["ratio"] < r.history[0]["winner"]["ratio"]
    assert r.history[1]["winner"]["metric"] >= 0.998


def test_fine_pruning_continues_after_two_four():
    model = _model()
    r = netadapt(model, _table(two_four=1.0), _metric, target_speedup=2.5,
                 granularities=("2:4",))
    assert r.reached
    first, later = r.history[0]["winner"], r.history[-1]["winner"]
    assert (first["layer"], first["granularity"]) == ("2", "2:4")
    assert (later["layer"], later["granularity"]) == ("2", "fine") and later["ratio"] > 0.5
    assert r.plans["2"].granularity == "2:4" and r.plans["2"].ratio == later["ratio"]
    W = model[2].weight.detach()
    assert int((W.reshape(32, 8, 4) != 0).sum(-1).max()) <= 2  # still a 2:4 pattern
    assert r.decisions["2"].format == "csc"


def test_config_and_keywords_give_the_same_search():
    from sparsekern.auto import NetAdaptConfig
    a = netadapt(_model(), _table(), _metric, NetAdaptConfig(target_speedup=2.0, steps=3))
    b = netadapt(_model(), _table(), _metric, target_speedup=2.0, steps=3)
    c = netadapt(_model(), _table(), _metric, NetAdaptConfig(target_speedup=9.0), steps=3,
                 target_speedup=2.0)  # keywords override the config's fields
    assert a.to_dict() == b.to_dict() == c.to_dict()


def test_config_errors_name_the_argument():
    from sparsekern.auto import NetAdaptConfig
    with pytest.raises(TypeError, match=r"netadapt\(\) got unexpected keyword argument\(s\) "
                                        r"\['stepz'\]; expected fields of NetAdaptConfig"):
        netadapt(_model(), _table(), _metric, target_speedup=2.0, stepz=3)
    with pytest.raises(TypeError, match=r"netadapt: config must be NetAdaptConfig or None, "
                                        r"got float; pass target_speedup=... by keyword"):
        netadapt(_model(), _table(), _metric, 2.0)
    with pytest.raises(ValueError, match=r"steps must be a positive int, got 0"):
        netadapt(_model(), _table(), _metric, NetAdaptConfig(target_speedup=2.0, steps=0))


def test_an_n_m_granularity_plans_the_1_4_layout():
    t = _table()
    t.layers["2"]["s"] = LayerLatency.synthetic(4.0, {"csc": [(0.0, 0.2), (1.0, 4.2)],
                                                      "1:4": [(0.25, 0.3)]})
    r = netadapt(_model(), t, _metric, target_speedup=1.5, granularities=("1:4",))
    assert r.reached and r.plans["2"].granularity == "1:4"
    assert r.decisions["2"].format == "1:4"


def test_a_nan_metric_never_passes_the_floor_nor_wins():
    """eval_fn returning NaN for a pruned candidate (a broken model) is rejected like a
    metric below min_metric; it used to pass the floor (NaN compares false) and the search
    kept pruning."""
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = netadapt(model, _table(), lambda m: float("nan") if prune.sparsity(m)["2"] > 0 or
                 prune.sparsity(m)["0"] > 0 else 1.0, target_speedup=2.0, min_metric=0.5)
    assert not r.reached and "eval_fn returned NaN for every candidate" in r.reason
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # left as it was
    r = netadapt(_model(), _table(), lambda m: float("nan") if prune.sparsity(m)["0"] > 0 else
                 _metric(m), target_speedup=1.5)
    assert all(p.ratio == 0.0 for n, p in r.plans.items() if n == "0")  # NaN lost to numbers


def test_layers_empty_and_a_table_of_another_model_are_refused():
    with pytest.raises(ValueError, match=r"layers is empty; name the layers to prune \(the table "
                                         r"has \['0', '2', '4'\]\) or pass None"):
        netadapt(_model(), _table(), _metric, target_speedup=2.0, layers=[])


def test_a_table_of_another_model_is_refused():
    """A table is looked up by layer name: one timed on other shapes (its entries'
    signatures) would plan with the wrong timings."""
    import sparsekern as sk
    from sparsekern.auto.signature import signature_of

    def mlp(h):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, h), nn.ReLU(), nn.Linear(h, 4))
    timed = mlp(32)
    table = _table()
    for name in ("0", "2"):
        for e in table.layers[name].values():
            e.entry["signature"] = signature_of(timed.get_submodule(name), (1, 16)).to_key()
    del table.layers["4"]
    msg = (r"latency_table: layer '0' is linear 64x16 \(bias, float32, cpu\) in Sequential but "
           r"the table timed linear 32x16 \(bias, float32, cpu\); expected the table of this "
           r"model")
    with pytest.raises(ValueError, match=msg):
        netadapt(mlp(64), table, _metric, target_speedup=1.5)
    with pytest.raises(ValueError, match=msg):
        sk.sparsify(mlp(64), layout="auto", latency_table=table)
    with pytest.raises(ValueError, match=r"latency_table: its layer '2' does not exist in "
                                         r"Sequential; build the table for this model"):
        netadapt(nn.Sequential(nn.Linear(16, 32)), table, _metric, target_speedup=1.5,
                 layers=["0"])
