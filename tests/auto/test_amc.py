"""AMC with a fake latency table: deterministic (seeded), no timing."""
import pytest
import torch
from torch import nn

from sparsekern import prune
from sparsekern.auto.amc import AMCResult, Policy, STATE_SIZE, amc
from sparsekern.auto.table import LatencyTable, LayerLatency


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def _table():
    """Layer "2" dominates and CSC pays for it; "0" and "4" are never faster sparse."""
    def e(dense, curves):
        return {"s": LayerLatency.synthetic(dense, curves)}
    return LatencyTable(["s"], {"0": e(1.0, {"csc": [(0.0, 1.5), (1.0, 2.5)]}),
                                "2": e(4.0, {"csc": [(0.0, 0.2), (1.0, 4.2)]}),
                                "4": e(0.1, {"csc": [(0.0, 1.0), (1.0, 2.0)]})},
                        {"s": 0.5}, {"s": 5.6})


def _metric(model):
    """Higher is better: every layer's sparsity costs something, "0" the most."""
    s = prune.sparsity(model)
    return 1.0 - 0.5 * s["0"] ** 2 - 0.1 * s["2"] ** 2 - 0.3 * s["4"] ** 2


def test_amc_meets_the_budget_and_applies_the_best_episode():
    model = _model()
    t = _table()
    seen = []
    res = amc(model, t, _metric, target_speedup=2.0, episodes=30, warmup_episodes=5,
              on_episode=seen.append, seed=1)
    assert isinstance(res, AMCResult) and len(res.history) == len(seen) == 30
    assert res.reached and res.best_episode is not None
    best = res.history[res.best_episode]
    assert best["feasible"]
    assert all(best["metric"] >= h["metric"] for h in res.history if h["feasible"])
    # what was applied is the best episode's ratios
    s = prune.sparsity(model)
    for n, r in best["ratios"].items():
        assert s[n] == pytest.approx(r, abs=0.02)
    assert res.decisions["2"].format == "csc"
    assert res.predicted_s["s"] <= res.budget_s["s"] + 1e-12
    assert res.metric_search == pytest.approx(_metric(model))
    assert res.to_dict()["best_episode"] == res.best_episode


def test_every_episode_is_clipped_to_stay_feasible():
    """AMC's action clipping: with the later layers at max_ratio the budget stays reachable,
    so every episode of a reachable budget is feasible, random warm-up ones included."""
    res = amc(_model(), _table(), _metric, target_speedup=2.0, episodes=12, warmup_episodes=12,
              seed=3)
    assert all(h["feasible"] for h in res.history)
    # layer "2" needs at least ~0.6 of its weights removed to reach 2x
    assert min(h["ratios"]["2"] for h in res.history) >= 0.5


def test_layers_that_stay_dense_are_not_pruned():
    """In the fake table no format pays for "0" or "4": pruning them would only cost
    accuracy, so every episode leaves them whole (and the applied model too)."""
    model = _model()
    res = amc(model, _table(), _metric, target_speedup=2.0, episodes=10, warmup_episodes=10,
              seed=5)
    assert all(h["ratios"]["0"] == 0.0 and h["ratios"]["4"] == 0.0 for h in res.history)
    assert all(h["formats"]["0"] == "dense" for h in res.history)
    s = prune.sparsity(model)
    assert s["0"] == 0.0 and s["4"] == 0.0 and s["2"] > 0.5


def test_amc_is_deterministic_for_a_seed():
    a = amc(_model(), _table(), _metric, target_speedup=2.0, episodes=15, warmup_episodes=3,
            seed=7)
    b = amc(_model(), _table(), _metric, target_speedup=2.0, episodes=15, warmup_episodes=3,
            seed=7)
    assert [h["ratios"] for h in a.history] == [h["ratios"] for h in b.history]


def test_amc_final_finetune_runs_with_masks_held():
    model = _model()
    calls = []

    def ft(m):
        calls.append(1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01)  # touches pruned weights too: the masks must win

    res = amc(model, _table(), _metric, target_speedup=2.0, episodes=4, warmup_episodes=4,
              final_finetune_fn=ft)
    assert calls == [1]
    for n, mask in res.masks.items():
        assert torch.all(model.get_submodule(n).weight[~mask] == 0)


def test_amc_unreachable_budget_reports_and_leaves_the_model():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = amc(model, _table(), _metric, target_speedup=50.0, episodes=5, warmup_episodes=2)
    assert not res.reached and res.best_episode is None
    assert "no episode met the budget" in res.reason
    assert all(not h["feasible"] for h in res.history)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_amc_rejections():
    m, t = _model(), _table()
    with pytest.raises(ValueError, match="granularity '2:4' fixes the ratio"):
        amc(m, t, _metric, target_speedup=2.0, granularity="2:4")
    with pytest.raises(ValueError, match="episodes must be a positive int, got 0"):
        amc(m, t, _metric, target_speedup=2.0, episodes=0)
    with pytest.raises(ValueError, match=r"warmup_episodes must be an int in \[0, episodes=3\], "
                                         r"got 5"):
        amc(m, t, _metric, target_speedup=2.0, episodes=3, warmup_episodes=5)
    with pytest.raises(ValueError, match=r"max_ratio and ratio_step must be in \(0, 1\)"):
        amc(m, t, _metric, target_speedup=2.0, max_ratio=1.0)
    with pytest.raises(ValueError, match=r"layers \['9'\] are not in the latency table"):
        amc(m, t, _metric, target_speedup=2.0, layers=["9"])
    with pytest.raises(ValueError, match="give exactly one of target_speedup and target_latency_s"):
        amc(m, t, _metric)


def test_policy_shape():
    p = Policy(hidden=8)
    assert p(torch.zeros(STATE_SIZE)).shape == ()
    assert p(torch.zeros(5, STATE_SIZE)).shape == (5,)


def test_config_and_keywords_give_the_same_run():
    from sparsekern.auto import AMCConfig
    kw = dict(target_speedup=2.0, episodes=6, warmup_episodes=2, seed=3)
    a = amc(_model(), _table(), _metric, AMCConfig(**kw))
    b = amc(_model(), _table(), _metric, **kw)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(TypeError, match=r"amc\(\) got unexpected keyword argument\(s\) "
                                        r"\['episode'\]; expected fields of AMCConfig"):
        amc(_model(), _table(), _metric, target_speedup=2.0, episode=3)
    with pytest.raises(TypeError, match=r"amc: config must be AMCConfig or None, got float"):
        amc(_model(), _table(), _metric, 2.0)
