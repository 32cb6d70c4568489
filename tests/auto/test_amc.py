"""AMC with a fake latency table: deterministic (seeded), no timing."""
import re

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


# ----------------------------------------------------------------------------- quality floor
# In the fake table only layer "2" pays; _metric is then 1 - 0.1 * s2 ** 2 and the 2x budget
# needs s2 >= 0.75 (metric <= 0.944).

def _floor_run(floor, episodes=30, seed=0, **kw):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = amc(model, _table(), _metric, target_speedup=2.0, episodes=episodes,
              warmup_episodes=episodes // 2, min_metric=floor, seed=seed, **kw)
    return model, before, res


def _dense_objective():
    return 5.6 / 2.8  # the dense model's predicted latency over the 2x budget


def test_floor_excludes_episodes_and_keeps_the_best_at_the_budget():
    model, _, res = _floor_run(0.92)
    h = res.history
    assert all(e["eligible"] == (e["metric"] >= 0.92) for e in h)
    assert any(not e["eligible"] for e in h)  # the floor excluded something ...
    assert any(e["feasible"] and not e["eligible"] for e in h)  # ... even at the budget
    assert res.choice == "budget" and res.reached and res.min_metric == 0.92
    best = h[res.best_episode]
    assert best["eligible"] and best["feasible"]
    assert best["metric"] == max(e["metric"] for e in h if e["eligible"] and e["feasible"])
    assert res.metric_search == pytest.approx(best["metric"]) and res.metric_search >= 0.92
    assert prune.sparsity(model)["2"] == pytest.approx(best["ratios"]["2"], abs=0.02)
    assert "metric" in res.reason and ">= floor 0.92" in res.reason
    d = res.to_dict()
    assert d["min_metric"] == 0.92 and d["choice"] == "budget"


def test_floor_out_of_reach_at_the_budget_gives_the_fastest_eligible_episode():
    """0.97 allows s2 <= 0.547: no plan above the floor meets the budget; the fastest plan
    above it is applied and the reason says so."""
    model, _, res = _floor_run(0.97)
    h = res.history
    assert not any(e["feasible"] and e["eligible"] for e in h)
    assert res.choice == "fastest" and not res.reached
    best = h[res.best_episode]
    above = [e for e in h if e["eligible"] and e["objective"] < _dense_objective()]
    assert best["objective"] == min(e["objective"] for e in above)
    assert best["metric"] >= 0.97 and best["ratios"]["2"] > 0.4
    assert prune.sparsity(model)["2"] == pytest.approx(best["ratios"]["2"], abs=0.02)
    assert res.metric_search >= 0.97
    assert res.predicted_s["s"] > res.budget_s["s"]
    assert (f"no episode with metric >= floor 0.97 met the budget" in res.reason and
            f"the fastest one above it, episode {best['episode'] + 1}" in res.reason)
    assert "predicted speedup" in res.reason


def test_no_eligible_episode_leaves_the_model_as_it_was():
    model, before, res = _floor_run(1.01, episodes=8)  # above even the dense model (1.0)
    assert all(not e["eligible"] for e in res.history)
    assert res.choice == "none" and res.best_episode is None and not res.masks
    assert not res.reached and all(p.granularity is None for p in res.plans.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    top = max(e["metric"] for e in res.history if e["objective"] < _dense_objective())
    assert res.reason.startswith("no episode reached the metric floor 1.01 (dense 1;")
    assert f"best metric seen {top:.4g}" in res.reason and "the model is left dense" in res.reason
    assert res.metric_dense == res.metric_search == res.metric_final == 1.0


def test_no_eligible_episode_restores_weights_an_eval_fn_changed():
    """The empty plan is the model before the search, even when eval_fn wrote into it."""
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def careless(m):
        with torch.no_grad():
            m[4].bias.add_(1.0)
        return _metric(m)
    res = amc(model, _table(), careless, target_speedup=2.0, episodes=4, warmup_episodes=2,
              min_metric=2.0)
    assert res.choice == "none"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_floor_warmup_starts_light_and_keeps_to_the_floor():
    """Warm-up under a floor: k random paying layers (k = 1 first, doubled after an
    eligible episode, halved after one below the floor), each at a paying ratio, no
    clipping (plans lighter than the budget are explored)."""
    t, metric = _three_paying()
    res = amc(_model(), t, metric, target_speedup=3.0, episodes=12, warmup_episodes=12,
              min_metric=0.85, seed=2)
    warm = res.history
    assert warm[0]["warmup_layers"] == 1
    for a, b in zip(warm, warm[1:]):
        want = min(3, 2 * a["warmup_layers"]) if a["eligible"] else max(1, a["warmup_layers"] // 2)
        assert b["warmup_layers"] == want
    for e in warm:
        pruned = [n for n, r in e["ratios"].items() if r > 0]
        assert len(pruned) == e["warmup_layers"]
        assert all(e["formats"][n] == "csc" for n in pruned)
        assert all(e["formats"][n] == "dense" for n in e["ratios"] if n not in pruned)
    assert any(not e["feasible"] for e in warm)
    assert {e["warmup_layers"] for e in warm} >= {1, 2}


def test_floor_rewards():
    """below the floor: -log(1 + shortfall / allowed drop), whatever the speed; eligible:
    the gain toward the budget, in [0, 1); eligible at the budget: 1 + the metric's share
    of the allowed drop."""
    import math
    _, _, res = _floor_run(0.93, episodes=20)
    span, dense = 1.0 - 0.93, _dense_objective()
    kinds = set()
    for e in res.history:
        if not e["eligible"]:
            kinds.add("below")
            assert e["reward"] == pytest.approx(-math.log1p((0.93 - e["metric"]) / span))
        elif e["feasible"]:
            kinds.add("met")
            assert e["reward"] == pytest.approx(1 + (e["metric"] - 0.93) / span)
        else:
            kinds.add("missed")
            assert e["reward"] == pytest.approx((dense - e["objective"]) / (dense - 1))
            assert 0 <= e["reward"] < 1
    assert kinds == {"below", "met", "missed"}


def _three_paying():
    """Every layer pays (CSC from 10% zeros); metric: 1 - 0.2 * sum of squared sparsities."""
    t = LatencyTable(["s"], {n: {"s": LayerLatency.synthetic(1.0, {"csc": [(0.0, 0.1), (1.0, 1.1)]})}
                             for n in ("0", "2", "4")}, {"s": 0.5}, {"s": 3.5})

    def metric(m):
        return 1.0 - 0.2 * sum(v ** 2 for v in prune.sparsity(m).values())
    return t, metric


def test_local_moves_centre_on_the_incumbent():
    """Under a floor the episodes after the warm-up are local moves around the episode that
    would be the result now: centred on its actions, a layer flips rarely."""
    from sparsekern.auto.amc import FOLLOW_LOGIT, AMCConfig, _Agent, choose_episode
    t, metric = _three_paying()
    model = _model()
    agent = _Agent(model, t, metric, AMCConfig(target_speedup=3.0, min_metric=0.9, episodes=8,
                                               warmup_episodes=5, seed=4))
    agent.metric_dense = metric(model)
    for ep in range(5):
        agent.history.append(agent.episode(ep))
    best, choice = choose_episode(agent.history, 0.9, agent.env.total_dense)
    assert choice in ("budget", "fastest") and any(r > 0 for r in best["ratios"].values())
    agent.recenter()
    assert agent.incumbent == best["episode"]
    for n in agent.names:
        c = agent.center[n]
        if best["ratios"][n] > 0:
            assert c >= FOLLOW_LOGIT
            # the incumbent's ratio, or the one at logit FOLLOW_LOGIT when that is heavier
            r = agent.env.floored_ratio(n, float(torch.sigmoid(torch.tensor(c))))
            floor_r = agent.env.floored_ratio(n, float(torch.sigmoid(torch.tensor(FOLLOW_LOGIT))))
            assert r == max(best["ratios"][n], floor_r)
        else:
            assert c == -FOLLOW_LOGIT
    moves = [agent.episode(ep) for ep in range(5, 8)]
    assert all(not m["warmup"] for m in moves)
    same = sum((m["ratios"][n] > 0) == (best["ratios"][n] > 0) for m in moves for n in agent.names)
    assert same >= 0.75 * len(moves) * len(agent.names)  # mostly the incumbent's layers


def test_floor_run_with_local_moves_is_deterministic_and_honours_the_floor():
    t, metric = _three_paying()
    runs = [amc(_model(), t, metric, target_speedup=3.0, episodes=14, warmup_episodes=6,
                min_metric=0.9, seed=3) for _ in range(2)]
    assert [h["ratios"] for h in runs[0].history] == [h["ratios"] for h in runs[1].history]
    res = runs[0]
    assert res.best_episode is not None and res.history[res.best_episode]["eligible"]
    assert any(not h["warmup"] and any(r > 0 for r in h["ratios"].values())
               for h in res.history)  # the local moves prune too, around the incumbent


def test_choose_episode_order():
    from sparsekern.auto.amc import choose_episode

    def e(i, metric, feasible, objective):
        return {"episode": i, "metric": metric, "feasible": feasible, "objective": objective}
    h = [e(0, 0.99, False, 1.5), e(1, 0.95, True, 1.0), e(2, 0.97, True, 0.9),
         e(3, 0.97, True, 0.8), e(4, 0.985, False, 1.2), e(5, 1.0, False, 2.0)]
    assert choose_episode(h, None, 2.0) == (h[2], "budget")       # first of equal metrics
    assert choose_episode(h, 0.96, 2.0) == (h[2], "budget")       # 1 is below the floor
    assert choose_episode(h, 0.98, 2.0) == (h[4], "fastest")      # none at the budget
    assert choose_episode(h, 0.995, 2.0) == (None, "none")        # only the dense-fast one
    assert choose_episode(h, 1.5, 2.0) == (None, "none")
    # without a floor a missed budget is no result (the behaviour before the floor)
    assert choose_episode([h[0], h[4]], None, 2.0) == (None, "none")
    tie = [e(0, 0.98, False, 1.2), e(1, 0.99, False, 1.2)]
    assert choose_episode(tie, 0.97, 2.0) == (tie[1], "fastest")  # same speed: better metric


def test_no_floor_is_the_behaviour_before_it():
    res = amc(_model(), _table(), _metric, target_speedup=2.0, episodes=10, warmup_episodes=3,
              seed=1)
    assert res.min_metric is None and res.choice == "budget"
    assert all(e["eligible"] and e["feasible"] for e in res.history)  # clipped, as before
    assert res.reason == f"best of 10 episodes (episode {res.best_episode + 1})"
    assert all(e["reward"] == e["metric"] for e in res.history)


def test_min_metric_rejections():
    for bad in ("0.9", True, float("nan"), float("inf"), [0.9]):
        with pytest.raises(ValueError, match=r"min_metric must be None or a finite number \(the "
                                             r"lowest eval_fn value an episode may have to be "
                                             r"the result\), got " + re.escape(repr(bad))):
            amc(_model(), _table(), _metric, target_speedup=2.0, min_metric=bad)


def test_floor_episodes_rate_different_plans():
    """Under a floor a plan already rated is drawn again."""
    t, metric = _three_paying()
    res = amc(_model(), t, metric, target_speedup=3.0, episodes=16, warmup_episodes=8,
              min_metric=0.9, seed=5)
    plans = [tuple(h["ratios"].values()) for h in res.history]
    assert len(set(plans)) == len(plans)
