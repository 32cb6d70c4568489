"""The demo's search when its target is out of the latency table's reach (sparsekern.demo.reach)
and the distillation settings of the main job; small random models, hand-made tables."""
import pytest
from sparsekern import demo
from sparsekern.auto import measure
from sparsekern.auto.table import LatencyTable, LayerLatency
from sparsekern.demo import minilm_job, reach

from .test_demo import TINY_TIMER, WordTokenizer, _tiny_bert, one_thread  # noqa: F401


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE", str(tmp_path / "cache"))


def _table(shapes, fast=("a",)):
    """Layers a, b (dense 1 ms each), 0.5 ms outside. CSC at 10% stored takes 0.25 ms for
    the ``fast`` layers and 2 ms for the others; at 50% stored, 1.5 ms (slower) for all."""
    def entry(name):
        t10 = 2.5e-4 if name in fast else 2e-3
        return {s: LayerLatency.synthetic(1e-3, {"csc": [(0.1, t10), (0.5, 1.5e-3)]})
                for s in shapes}
    return LatencyTable(list(shapes), {"a": entry("a"), "b": entry("b")},
                        {s: 5e-4 for s in shapes}, {s: 2.5e-3 for s in shapes})


def test_reachable_speedup_by_hand():
    t = _table(["x", "y"])
    # a at 90% in CSC: 0.25 ms; b stays dense (CSC slower): 0.5 + 0.25 + 1 = 1.75 ms
    r = reach.reachable_speedup(t, ["a", "b"], "fine", 0.9, margin=0.03)
    assert r == {"x": pytest.approx(2.5 / 1.75), "y": pytest.approx(2.5 / 1.75)}
    # only b searchable: b never pays, nothing changes
    assert reach.reachable_speedup(t, ["b"], "fine", 0.9, 0.03) == {"x": pytest.approx(1.0),
                                                                     "y": pytest.approx(1.0)}
    # at 50% nothing is faster than dense
    assert reach.reachable_speedup(t, ["a", "b"], "fine", 0.5, 0.03)["x"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"layers \['c'\] are not in the latency table"):
        reach.reachable_speedup(t, ["c"], "fine", 0.9, 0.03)


def test_reachable_speedup_counts_a_plan_that_fits_the_llc_as_light():
    t = _table(["x"])
    # light entries: every time a third lower; bytes: a dense layer 1000, CSC at 10% 100
    t.light = {n: {"x": LayerLatency.synthetic(1e-3 / 3, {"csc": [(0.1, t10 / 3), (0.5, 5e-4)]})}
               for n, t10 in (("a", 2.5e-4), ("b", 2e-3))}
    for per in list(t.layers.values()) + list(t.light.values()):
        e = per["x"].entry
        e["bytes"] = {"dense": 1000}
        for p, b in zip(e["formats"]["csc"], (100, 500)):
            p["bytes"] = b
    t.meta.update(outside_bytes=0, light_context="llc", llc_bytes=1000)
    # dense: 2000 bytes in a 1000-byte LLC, all cold: 2.5 ms; a in CSC: 1100 bytes, a share
    # (1.1 - LLC_LIGHT) / (LLC_HEAVY - LLC_LIGHT) of 0.25 + 1 ms cold, the rest a third of it
    lo, hi = measure.LLC_LIGHT, measure.LLC_HEAVY
    share = (1.1 - lo) / (hi - lo)
    assert 0.0 < share < 1.0 and 2.0 >= hi
    sparse = 0.5e-3 + share * 1.25e-3 + (1 - share) * 1.25e-3 / 3
    r = reach.reachable_speedup(t, ["a", "b"], "fine", 0.9, margin=0.03)
    assert r == {"x": pytest.approx(2.5e-3 / sparse)}


def test_relaxed_targets():
    assert reach.relaxed_targets({"x": 2.0, "y": 1.5}, {"x": 1.5, "y": 3.0}, 0.8) == {
        "x": pytest.approx(1.4), "y": 1.5}
    assert reach.relaxed_targets({"x": 2.0}, {"x": 1.01}, 0.8) == {}
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        reach.relaxed_targets({"x": 2.0}, {"x": 3.0}, 0)
    with pytest.raises(ValueError, match="targets and reachable must have the same shapes"):
        reach.relaxed_targets({"x": 2.0}, {"y": 3.0}, 0.5)


def test_config_rejects_bad_relax_and_loss():
    with pytest.raises(ValueError, match="relax_target must be in \\[0, 1\\], got 1.5"):
        demo.DemoConfig(relax_target=1.5)
    with pytest.raises(ValueError, match="distill_loss must be 'mse' or 'cosine', got 'l1'"):
        demo.DemoConfig(distill_loss="l1")


def _bert_table(model, examples, paying):
    """CSC at 10% stored pays (x0.3) for the ``paying`` layers only; 50% never pays."""
    from sparsekern.auto.signature import input_label
    shapes = [input_label(x) for x in examples]
    names = minilm_job.linear_names(model, minilm_job.FFN + minilm_job.ATTENTION)
    layers = {n: {s: LayerLatency.synthetic(1e-4, {"csc": [(0.1, 3e-5 if n in paying else 3e-4),
                                                            (0.5, 1.5e-4)]})
                  for s in shapes} for n in names}
    return LatencyTable(shapes, layers, {s: 2e-4 for s in shapes},
                        {s: 1.4e-3 for s in shapes})


def _job(tmp_path, paying, **over):
    model = _tiny_bert()
    data = minilm_job.text_data(WordTokenizer(), n_calib=16, n_val=16, n_distill=32, n_eval=32,
                                batch=16, distill_batch=16, sentences=(1, 8))
    ffn = minilm_job.linear_names(model, minilm_job.FFN)
    lines = []
    cfg = minilm_job.job_config(
        model, data, layers="ffn", **{**dict(
            table=_bert_table(model, data.examples, ffn if paying else ()), timer=TINY_TIMER,
            windows=1, final_steps=2, amc_episodes=4, sensitivity_ratios=(0.5,),
            sensitivity_layers=ffn, final_criterion=None, layer_latency=False,
            out_dir=str(tmp_path / "job"), print_fn=lines.append), **over})
    return model, data, cfg, lines


def test_search_relaxes_an_unreachable_target(tmp_path, one_thread):
    # 4 FFN layers at x0.3 of 1e-4 s out of 1.4e-3 s: far from 50x, but a real gain
    model, data, cfg, lines = _job(tmp_path, paying=True, target_speedup=50.0,
                                   required_speedup=50.0)
    assert cfg.relax_target > 0 and cfg.max_ratio == 0.9
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    r = res.report
    rel = r["relaxed_search"]
    best = (1.4e-3) / (1.4e-3 - 4 * 1e-4 * 0.7)  # every FFN layer at 90% in CSC
    assert all(v == pytest.approx(best) for v in rel["reachable"].values())
    assert all(t == pytest.approx(1 + cfg.relax_target * (best - 1))
               for t in rel["targets"].values())
    assert res.search.masks and set(res.search.masks) <= set(cfg.layers)
    assert any(L["format"] == "csc" for L in r["layers"])
    # the checks keep the required speedup: an honest failure
    assert all(not c["ok"] for c in r["checks"]["speedup"].values())
    assert not r["checks"]["all_ok"]
    text = "\n".join(lines)
    assert "the target is out of reach with these kernels at " in text
    assert "(50.00x wanted)" in text  # names the sizes that miss, and by how much
    assert "searching for 80% of that gain instead" in text
    assert text.count("AMC search (4 episodes") == 1  # straight to the relaxed target


def test_search_keeps_dense_when_nothing_pays(tmp_path, one_thread):
    model, data, cfg, lines = _job(tmp_path, paying=False)
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    r = res.report
    assert not res.search.masks
    assert r["relaxed_search"]["targets"] is None
    assert all(v == pytest.approx(1.0) for v in r["relaxed_search"]["reachable"].values())
    assert all(L["format"] == "dense" for L in r["layers"])
    assert "the latency table allows no gain" in "\n".join(lines)


def test_distill_loss_reaches_the_task(tmp_path, one_thread, monkeypatch):
    seen = []
    real = demo.tasks.prune.distill

    def spy(*a, **k):
        seen.append((k["loss"], k["warmup"], k["steps"]))
        return real(*a, **k)
    monkeypatch.setattr(demo.tasks.prune, "distill", spy)
    model, data, cfg, lines = _job(tmp_path, paying=True, target_speedup=1.1,
                                   required_speedup=1.1, final_steps=10)
    assert cfg.distill_loss == "cosine"
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    assert res.search.masks and seen == [("cosine", 1, 10)]
    # the target is reachable: searched as given, not relaxed
    assert res.report["relaxed_search"]["targets"] is None
    assert all(v > 1.1 for v in res.report["relaxed_search"]["reachable"].values())
    pruned = {L["name"]: L["sparsity"] for L in res.report["layers"]}
    for n, m in res.search.masks.items():  # masks held through the recovery
        assert pruned[n] == pytest.approx(1 - m.float().mean().item(), abs=1e-6)
    assert res.report["config"]["distill_loss"] == "cosine"
    run = res.report["recovery"]["distill"]  # 10 steps: rated every 3 and after the last
    assert [s for s, _ in run["ratings"]] == [0, 3, 6, 9, 10]
    assert run["kept_metric"] == max(m for _, m in run["ratings"])
    assert f"validation at steps 0, 3, 6, 9, 10: " in "\n".join(lines)
    assert f"; lr {run['lr_used']:.3g} ({cfg.lr:.3g} scaled by the distance to dense " in \
        "\n".join(lines)


def test_cli_search_options(tmp_path, capsys):
    import argparse
    from sparsekern.__main__ import main
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    a = p.parse_args([])
    assert a.max_ratio == 0.9 and not a.no_relax
    a = p.parse_args(["--max-ratio", "0.8", "--no-relax"])
    assert a.max_ratio == 0.8 and a.no_relax
    assert a.max_search_drop is None  # the job's own (MAX_SEARCH_DROP)
    assert p.parse_args(["--max-search-drop", "0.05"]).max_search_drop == 0.05
    assert demo.cli.MINILM_TARGET == demo.cli.MINILM_REQUIRED == (2.0, 1.5)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--max-ratio", "1.0", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "argument --max-ratio: expected a number in (0, 1), got 1.0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- quality floor

def test_amc_gets_the_floor_from_max_search_drop(tmp_path, one_thread, monkeypatch):
    seen = []
    real = demo.pipeline.amc

    def spy(*a, **k):
        seen.append(k)
        return real(*a, **k)
    monkeypatch.setattr(demo.pipeline, "amc", spy)
    model, data, cfg, lines = _job(tmp_path, paying=True, target_speedup=50.0,
                                   required_speedup=50.0)
    assert cfg.max_search_drop == minilm_job.MAX_SEARCH_DROP == 0.03
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    assert len(seen) == 1
    base = res.search.metric_dense  # the dense model's own cosine: 1
    assert base == pytest.approx(1.0, abs=1e-5)
    assert seen[0]["min_metric"] == pytest.approx(base - 0.03)
    assert res.search.min_metric == seen[0]["min_metric"]
    r = res.report["search"]
    assert r["min_metric"] == pytest.approx(base - 0.03) and r["choice"] in ("budget", "fastest")
    assert all(h["eligible"] == (h["metric"] >= r["min_metric"]) for h in r["history"])
    text = "\n".join(lines)
    assert f"quality floor: mean cosine to dense >= {base - 0.03:.4f} before recovery " \
           f"(dense {base:.4f} - max_search_drop 0.03)" in text
    assert f"chosen plan (episode {res.search.best_episode + 1}, " in text


def test_no_plan_above_the_floor_keeps_the_model_dense(tmp_path, one_thread):
    """max_search_drop 0: only the dense model is good enough; the job says so and stays
    dense (no recovery, no converted layer)."""
    model, data, cfg, lines = _job(tmp_path, paying=True, target_speedup=50.0,
                                   required_speedup=50.0, max_search_drop=0.0)
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    assert not res.search.masks and res.search.choice == "none"
    assert all(L["format"] == "dense" for L in res.report["layers"])
    text = "\n".join(lines)
    assert "no episode reached the metric floor" in text and "best metric seen" in text
    assert "chosen plan: none (the model stays dense)" in text
    assert "recovery: none (nothing was pruned)" in text and res.report["recovery"] is None


def test_minilm_floor_matches_the_quality_check():
    cfg = demo.DemoConfig()
    assert minilm_job.MAX_SEARCH_DROP == pytest.approx(1.0 - cfg.min_cosine)


def test_config_rejects_a_bad_max_search_drop():
    for bad in (-0.1, "0.03", None, float("inf"), True):
        with pytest.raises(ValueError, match=r"max_search_drop must be a finite number >= 0 "
                                             r"\(the search's metric floor is the dense metric "
                                             r"minus it\), got "):
            demo.DemoConfig(max_search_drop=bad)


def _noisy_recovery(model):
    """A 'recovery' that only hurts: noise on every weight (the pruned ones stay zero:
    the masks are held)."""
    import torch
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))


def test_a_recovery_that_lowers_the_metric_is_undone(tmp_path, one_thread):
    import torch
    seen = {}

    def final(m):
        seen["before"] = {k: v.clone() for k, v in m.state_dict().items()}
        _noisy_recovery(m)
    model, data, cfg, lines = _job(tmp_path, paying=True, target_speedup=50.0,
                                   required_speedup=50.0, max_search_drop=2.0,
                                   final_finetune_fn=final)
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    rec = res.report["recovery"]
    assert res.search.masks and rec["kept"] is False
    assert rec["metric_after"] < rec["metric_before"] == res.search.metric_search
    assert res.search.metric_final == res.search.metric_search
    sparse = res.model.state_dict()  # the weights before the recovery, not the noisy ones
    same = [k for k, v in seen["before"].items() if k in sparse and sparse[k].shape == v.shape]
    assert len(same) > 10
    assert all(torch.equal(sparse[k], seen["before"][k]) for k in same)
    text = "\n".join(lines)
    assert "lower than before it: the weights before the recovery are kept" in text


def test_a_recovery_that_helps_is_kept(tmp_path, one_thread):
    model, data, cfg, lines = _job(tmp_path, paying=True, target_speedup=50.0,
                                   required_speedup=50.0, max_search_drop=2.0,
                                   final_finetune_fn=lambda m: None)  # changes nothing: kept
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    rec = res.report["recovery"]
    assert rec["kept"] is True and rec["metric_after"] == pytest.approx(rec["metric_before"])
    assert "the weights before the recovery are kept" not in "\n".join(lines)


def test_ratios_text_counts_layers_in_words():
    from sparsekern.demo.pipeline import _ratios_text
    assert _ratios_text({"encoder.layer.1.output.dense": 0.86}).startswith("1 layer pruned: ")
    assert _ratios_text({"a.dense": 0.5, "b.dense": 0.7, "c": 0.0}).startswith("2 layers pruned: ")
    assert _ratios_text({"c": 0.0}) == "nothing pruned"
