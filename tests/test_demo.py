"""Smoke tests of the demo (tiny configurations; no assertion on timing)."""
import json
import os

import pytest
import torch

from sparsekern import demo
from sparsekern.auto.table import LatencyTable, LayerLatency
from sparsekern.bench.timing import TimerSettings

TINY_TIMER = TimerSettings(min_time=0.002, min_reps=2, max_reps=5, max_candidate_time=0.05,
                           warmup_time=0.0, max_warmup_calls=1)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE", str(tmp_path / "cache"))


def _fake_table(shapes):
    """CSC is fast for fc2 (so the search prunes it), nothing else is."""
    def e(dense, curves):
        return {s: LayerLatency.synthetic(dense, curves) for s in shapes}
    return LatencyTable(list(shapes), {
        "fc1": e(1e-4, {"csc": [(0.05, 5e-4), (0.5, 1e-3)]}),
        "fc2": e(1e-3, {"csc": [(0.02, 1e-4), (0.5, 1.2e-3)], "2:4": [(0.5, 9e-4)]}),
        "head": e(1e-4, {"csc": [(0.05, 5e-4)]})},
        {s: 1e-4 for s in shapes}, {s: 1.3e-3 for s in shapes})


def _check_report(r, out, shapes):
    assert set(r["accuracy"]) >= {"dense", "pruned", "drop"}
    assert 0 <= r["accuracy"]["dense"] <= 1 and 0 <= r["accuracy"]["pruned"] <= 1
    assert [L["name"] for L in r["layers"]] == ["fc1", "fc2", "head"]
    for L in r["layers"]:
        assert {"format", "layout", "sparsity", "stored_fraction", "reason", "latency_s"} <= set(L)
        assert set(L["latency_s"]) == set(shapes)
    assert r["shapes"] == shapes
    for s in shapes:
        x = r["latency"][s]
        assert x["dense_s"] > 0 and x["sparse_s"] > 0
        assert x["speedup"] == pytest.approx(x["dense_s"] / x["sparse_s"])
        assert x["predicted_sparse_s"] > 0 and "prediction_error" in x
    assert set(r["checks"]) == {"speedup", "accuracy", "auto_not_slower", "prediction", "all_ok"}
    assert {"history", "reached", "reason", "plans"} <= set(r["search"])
    assert r["sensitivity"]["curves"].keys() == {"fc1", "fc2", "head"}
    for key in ("sensitivity", "layer_latency", "latency_table"):
        with open(r["plots"][key], "rb") as f:
            assert f.read(8) == PNG
    for key in ("latency_table", "model", "report"):
        assert os.path.getsize(r["files"][key]) > 0
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["layers"] == json.loads(json.dumps(r["layers"]))


def test_run_with_a_given_table(tmp_path):
    torch.manual_seed(0)
    train, val, test = demo.digits_data(0)
    model = demo.DigitsMLP(hidden=32)
    from sparsekern import prune
    prune.train(model, train, epochs=2, lr=3e-3, progress=False)
    X = test.dataset.tensors[0]
    xs = [X[:1], X[:4]]
    shapes = ["[1, 64]", "[4, 64]"]
    out = str(tmp_path / "out")
    lines = []
    res = demo.run(model, train, val, xs, target_speedup=[2.0, 2.0], test_loader=test,
                   table=_fake_table(shapes), short_steps=2, final_epochs=1, max_iterations=3,
                   sensitivity_ratios=(0.5, 0.9), timer=TINY_TIMER, out_dir=out,
                   print_fn=lines.append)
    r = res.report
    _check_report(r, out, shapes)
    fc2 = next(L for L in r["layers"] if L["name"] == "fc2")
    assert fc2["format"] == "csc" and fc2["sparsity"] > 0.5  # the fake table makes it pay
    assert r["search"]["history"] and r["search"]["reason"]
    assert any("checks:" in line for line in lines)
    x = xs[0]
    with torch.no_grad():
        assert res.model(x).shape == (1, 10)


def test_cli_quick(tmp_path, capsys):
    from sparsekern.__main__ import main
    out = str(tmp_path / "cli")
    assert main(["demo", "--quick", "--out", out, "--batches", "1", "4"]) == 0
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    _check_report(r, out, ["[1, 64]", "[4, 64]"])
    assert r["dataset"]["name"] == "sklearn digits" and r["model"]["hidden"] == 64
    assert "checks:" in capsys.readouterr().out


def test_cli_quick_amc(tmp_path, capsys):
    from sparsekern.__main__ import main
    out = str(tmp_path / "amc")
    assert main(["demo", "--quick", "--strategy", "amc", "--out", out, "--batches", "1", "4"]) == 0
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    _check_report(r, out, ["[1, 64]", "[4, 64]"])
    assert r["config"]["strategy"] == "amc" and "best_episode" in r["search"]
    assert "AMC search" in capsys.readouterr().out


def test_run_rejects_an_unknown_strategy(tmp_path):
    train, val, test = demo.digits_data(0)
    X = test.dataset.tensors[0]
    with pytest.raises(ValueError, match="strategy must be 'netadapt' or 'amc', got 'grid'"):
        demo.run(demo.DigitsMLP(hidden=16), train, val, [X[:1]], table=_fake_table(["[1, 64]"]),
                 strategy="grid", sensitivity_ratios=(0.5,), timer=TINY_TIMER,
                 out_dir=str(tmp_path), print_fn=lambda s: None)


def test_cli_rejects_mismatched_targets(tmp_path):
    from sparsekern.__main__ import main
    with pytest.raises(SystemExit, match="--target-speedup: give one value, or one per batch"):
        main(["demo", "--quick", "--out", str(tmp_path), "--target-speedup", "2", "3", "4"])
