"""Every table the library measures loads back: a point's stored ratio is one to the dense
time stored beside it, also when dense was re-timed or a point was paired with outlier dense
samples. A table records whether it was measured on a busy machine, keeps saying so once
saved and loaded, and a choice made from it says so too; nothing measured busy is cached.
Timers are scripted records or fake clocks (no real timing)."""
import dataclasses
import json
import random
import warnings

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.auto import measure, table
from sparsekern.auto.cache import DiskCache
from sparsekern.auto.measure import Grid, MeasureSettings, measure_signature
from sparsekern.auto.signature import signature_of
from sparsekern.auto.table import LatencyTable, LayerLatency, entry_problem
from sparsekern.bench import magnitude
from sparsekern.timing import paired
from ..fake_clock import FakeClock

GRID = MeasureSettings(grid=Grid(sparsities=(0.5, 0.9), blocks=((4, 4),),
                                 layouts=("2:4", "bsr", "csc")), context="warm")
POINTS = ["2:4@0.5", "bsr4x4@0.5", "bsr4x4@0.9", "csc@0.5", "csc@0.9"]


def _sig():
    return signature_of(nn.Linear(64, 32), (1, 64))


def _round_trip(entry: dict, tmp_path) -> LatencyTable:
    t = LatencyTable(["[1, 64]"], {"fc": {"[1, 64]": LayerLatency(entry)}})
    t.save(tmp_path / "t.json")
    return LatencyTable.load(tmp_path / "t.json")


def _ok_points(e):
    return [p for pts in e["formats"].values() for p in pts if p["status"] == "ok"]


def _points_agree_with_dense(e):
    assert entry_problem(e) is None
    for p in _ok_points(e):
        assert measure.ratio_agrees(p["median_s"], e["dense"]["median_s"], p["ratio"])


# -- a point's stored ratio --------------------------------------------------------------

@pytest.mark.parametrize("rec, dense_ok, want, note", [
    ({"median_s": 2e-4, "ratio": 0.21}, True, 0.21, ""),                  # paired, kept
    ({"median_s": 2e-4, "ratio": 0.21}, False, 0.2, "dense was re-timed"),
    ({"median_s": 1.33e-5, "ratio": 0.003}, True, 1.33e-2, "were outliers"),
    ({"median_s": 2e-4, "ratio": float("inf")}, True, 0.2, "were outliers")])
def test_stored_ratio_is_one_to_the_settled_dense(rec, dense_ok, want, note):
    dense_s = 1e-3
    ratio, why = measure.stored_ratio(rec, dense_s, dense_ok)
    assert ratio == pytest.approx(want)
    assert (note in why) if note else why == ""
    assert measure.ratio_agrees(rec["median_s"], dense_s, ratio)


def _retimed(dense_after, point_ratio=0.003, point_x=1.33):
    """time_entry_jobs as under load: dense's paired samples stalled (5.7 ms, unstable), every
    point stable at ``point_x`` x dense's real time with a paired ratio of ``point_ratio``;
    dense alone then gives the records of ``dense_after`` in turn."""
    after = iter(dense_after)

    def fake(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        if list(jobs) == ["dense"]:
            return {"dense": next(after)}
        out = {n: {"median_s": point_x * 1.2e-5, "iqr_s": 0.0, "ratio": point_ratio,
                   "stable": True, "attempts": 1, "why": ""} for n in jobs}
        out["dense"] = {"median_s": 5.7e-3, "iqr_s": 3e-3, "min_s": 1.2e-5, "stable": False,
                        "why": "its samples take 5.7 ms, 5571x its physical floor"}
        return out
    return fake


STABLE = {"median_s": 1.2e-5, "iqr_s": 1e-7, "min_s": 1.1e-5, "stable": True, "why": ""}
STALLED = {"median_s": 6e-3, "iqr_s": 4e-3, "min_s": 1.25e-5, "stable": False, "why": "slices"}


@pytest.mark.parametrize("dense_after, estimate", [
    ([STALLED, STABLE], None),                       # re-timed, stable the second time
    ([STALLED, STALLED], "fastest sample")])         # its fastest sample stands in
def test_a_retimed_dense_leaves_every_point_consistent(monkeypatch, tmp_path, dense_after,
                                                       estimate):
    """The trial's failure: dense re-timed ("retimed": 2) while the points kept their paired
    ratios of 0.003x, taken against the stalled samples; the saved table did not load."""
    monkeypatch.setattr(measure, "time_entry_jobs", _retimed(dense_after))
    e = measure_signature(_sig(), GRID)
    assert e["dense"]["retimed"] == 2 and e["dense"].get("estimate") == estimate
    _points_agree_with_dense(e)
    for p in _ok_points(e):
        assert p["ratio"] == pytest.approx(p["median_s"] / e["dense"]["median_s"])
        assert "dense was re-timed (paired ratio 0.003x)" in p["reason"]
    loaded = _round_trip(e, tmp_path).layers["fc"]["[1, 64]"]
    assert loaded.predict("csc", 0.1) == pytest.approx(1.33 * 1.2e-5)


def test_a_retimed_entry_is_cached_and_read_back_as_sound(monkeypatch, tmp_path):
    # the cache checks hits with entry_problem too: the entry would have been called damaged
    monkeypatch.setattr(measure, "time_entry_jobs", _retimed([STALLED, STABLE]))
    c = DiskCache("latency", root=tmp_path)
    first = table.layer_entry(_sig(), GRID, cache=c)
    assert first.entry["dense"]["stable"] and len(list(c.folder.iterdir())) == 1
    monkeypatch.setattr(measure, "time_entry_jobs", lambda *a, **k: pytest.fail("re-timed"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # "holds a damaged latency entry" would raise
        again = table.layer_entry(_sig(), dataclasses.replace(GRID, recheck=0),
                                  cache=DiskCache("latency", root=tmp_path))
    assert again.provenance == "cached" and again.entry == first.entry


def test_points_paired_with_outlier_dense_samples_are_consistent(monkeypatch, tmp_path):
    """Dense stable overall, but the dense samples paired with csc@0.9 stalled (a stall of
    dense alone): its paired ratio says 0.002x while it takes 0.5x dense's time."""
    def fake(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        out = {n: {"median_s": 1e-3 * 0.5, "iqr_s": 0.0, "ratio": 0.5, "stable": True,
                   "attempts": 1, "why": ""} for n in jobs}
        out["csc@0.9"]["ratio"] = 0.002
        out["dense"] = dict(STABLE, median_s=1e-3)
        return out
    monkeypatch.setattr(measure, "time_entry_jobs", fake)
    e = measure_signature(_sig(), GRID)
    _points_agree_with_dense(e)
    csc90 = e["formats"]["csc"][1]
    assert csc90["ratio"] == pytest.approx(0.5) and "were outliers" in csc90["reason"]
    kept = e["formats"]["csc"][0]
    assert kept["ratio"] == 0.5 and kept["reason"] == ""   # agreeing ratios stay paired
    _round_trip(e, tmp_path)


def fake_clock_pairing(times, stall_after, stall_s):
    """measure.time_paired on a fake clock: job n takes times[n] s per call, except dense
    between a call of ``stall_after`` and the next other candidate: ``stall_s`` (dense alone
    stalls, so the dense samples paired with the job after ``stall_after`` are outliers)."""
    clock, state = FakeClock(), {"stall": False}

    def job(name):
        def fn(_):
            if name == "dense":
                clock.t += stall_s if state["stall"] else times[name]
            else:
                clock.t += times[name]
                state["stall"] = name == stall_after
        return fn

    def timed(jobs, reference, s=None, before_sample=None, bound_ratio=None,
              reference_floor=None):
        fake = {n: (job(n), a) for n, (_, a) in jobs.items()}
        return paired.time_paired(fake, reference, s, clock, before_sample, bound_ratio,
                                  reference_floor)
    return timed


def test_real_pairing_with_outlier_dense_samples_on_a_fake_clock(monkeypatch, tmp_path):
    times = dict({n: 1e-5 for n in POINTS}, dense=2e-5)
    monkeypatch.setattr(measure, "time_paired", fake_clock_pairing(times, "csc@0.5", 5e-3))
    e = measure_signature(_sig(), GRID)
    assert e["dense"]["stable"] and e["dense"]["median_s"] == pytest.approx(2e-5)
    assert e["formats"]["csc"][1]["status"] == "ok"   # its own samples are sound
    _points_agree_with_dense(e)
    assert "were outliers (paired ratio 0.002x" in e["formats"]["csc"][1]["reason"]
    assert e["formats"]["csc"][0]["reason"] == ""
    _round_trip(e, tmp_path)


def _random_records(rng):
    """time_entry_jobs whose records are drawn from ``rng``: dense paired stable or not,
    re-timings stable or not, every point's median and paired ratio drawn independently."""
    def rec(stable, med):
        return {"median_s": med, "iqr_s": 0.1 * med, "min_s": med * rng.uniform(0.3, 1.0),
                "stable": stable, "why": "" if stable else "slices"}

    def fake(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        out = {"dense": rec(rng.random() < 0.5, 10 ** rng.uniform(-5, -2))}
        for n in list(jobs)[1:]:
            out[n] = dict(rec(rng.random() < 0.8, 10 ** rng.uniform(-6, -2)), attempts=2,
                          ratio=10 ** rng.uniform(-3, 3))
        return out
    return fake


@pytest.mark.parametrize("seed", range(40))
def test_every_measured_entry_loads_back(monkeypatch, tmp_path, seed):
    monkeypatch.setattr(measure, "time_entry_jobs", _random_records(random.Random(seed)))
    e = measure_signature(_sig(), GRID)
    _points_agree_with_dense(e)
    again = _round_trip(e, tmp_path).layers["fc"]["[1, 64]"].entry
    assert again == json.loads(json.dumps(e))


def test_a_recheck_over_an_unstable_dense_confirms_nothing(monkeypatch):
    from tests.auto.test_trust import _cached_entry, scripted
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: 0.2 if n == "csc@0.9" else 0.6, unstable={"dense"}))
    res = measure.recheck_entry(_sig(), _cached_entry(), MeasureSettings(recheck=1))
    assert not res["agree"] and res["why"].startswith("dense unstable now (ratio to the")


# -- a table measured on a busy machine says so ------------------------------------------

def _fake_measure(monkeypatch, busy, figures=None):
    """measure_signatures -> synthetic entries; machine_busy -> ``busy`` (filling ``figures``)."""
    calls = []

    def check(others_cpus=None, seen=None):
        calls.append(others_cpus)
        if seen is not None:
            seen.update(figures or {})
        return busy

    monkeypatch.setattr(table, "measure_signatures", lambda sigs, settings=None: [
        LayerLatency.synthetic(1e-3, {"csc": [(0.02, 2e-4), (0.5, 2e-3)]}, g.to_key()).entry
        for g in sigs])
    monkeypatch.setattr(table, "machine_busy", check)
    return calls


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        m[0].weight.copy_(magnitude.prune_unstructured(m[0].weight, 0.98))
    return m


BUSY = "other processes used 1.63 CPUs on average during the measurement (limit 0.25)"
FIGURES = {"runnable_others": 2.0, "steal": 0.0, "load_avg": 3.1}


def test_a_table_measured_busy_says_so_after_save_and_load(monkeypatch, tmp_path,
                                                           _private_cache):
    _fake_measure(monkeypatch, BUSY, FIGURES)
    t = table.build_table(_model(), [torch.randn(1, 64)], cache=False,
                          measure_whole_model=False)
    assert t.busy is True and t.meta["load"]["busy_entries"] == ["0 @ [1, 64]", "2 @ [1, 64]"]
    assert t.meta["load"]["why"] == BUSY and t.meta["load"]["runnable_others"] == 2.0
    t.save(tmp_path / "busy.json")
    loaded = LatencyTable.load(tmp_path / "busy.json")
    assert loaded.busy is True and loaded.meta["load"] == t.meta["load"]
    e = loaded.layers["0"]["[1, 64]"]
    assert e.provenance == "given" and e.busy is True and e.busy_why == BUSY
    assert e.entry["load"]["load_avg"] == 3.1


def test_a_quiet_table_says_it_was_quiet_and_is_cached(monkeypatch, tmp_path):
    calls = _fake_measure(monkeypatch, None, FIGURES)
    c = DiskCache("latency", root=tmp_path)
    t = table.build_table(_model(), [torch.randn(1, 64)], cache=c, measure_whole_model=False)
    assert t.busy is False and t.meta["load"]["busy_entries"] == [] and len(calls) == 2
    assert t.layers["0"]["[1, 64]"].entry["load"]["runnable_others"] == 2.0
    assert len(list(c.folder.iterdir())) == 2


def test_the_load_is_checked_without_a_cache(monkeypatch):
    # before, the check ran only when there was a cache to keep busy entries out of
    calls = _fake_measure(monkeypatch, BUSY)
    t = table.build_table(_model(), [torch.randn(1, 64)], cache=False,
                          measure_whole_model=False)
    assert len(calls) == 2 and t.busy is True


def _busy_file(monkeypatch, tmp_path):
    _fake_measure(monkeypatch, BUSY, FIGURES)
    t = table.build_table(_model(), [torch.randn(1, 64)], cache=False,
                          measure_whole_model=False)
    t.save(tmp_path / "busy.json")
    monkeypatch.setattr(table, "measure_signatures", lambda *a, **k: pytest.fail("measured"))
    return tmp_path / "busy.json"


def test_sparsify_from_a_busy_table_says_so_and_caches_nothing(monkeypatch, tmp_path,
                                                               _private_cache):
    loaded = LatencyTable.load(_busy_file(monkeypatch, tmp_path))
    with pytest.warns(RuntimeWarning, match=r"latency table was measured on a busy machine "
                                            r"\(other processes used 1\.63 CPUs.*\) for 2 "
                                            r"entries \(0 @ \[1, 64\], 2 @ \[1, 64\]\)") as rec:
        out = sk.sparsify(_model(), layout="auto", latency_table=loaded)
    assert [w.filename for w in rec if "busy" in str(w.message)] == [__file__]  # the caller
    assert out.sparsekern_entries["busy"] == ["0 @ [1, 64]", "2 @ [1, 64]"]
    assert out.sparsekern_report["0"][0] == "csc"
    assert out.sparsekern_report["0"][1].endswith(
        f"[timed on a busy machine at [1, 64]: {BUSY}: a quiet run may choose otherwise]")
    assert "timed on a busy machine" in out.sparsekern_decisions["2"].reason
    # a given table is never written to the cache, busy or not
    assert not _private_cache.exists() or not any(_private_cache.rglob("*.json"))


def test_a_table_whose_meta_alone_says_busy_still_warns(monkeypatch, tmp_path):
    # entries without "load" (made by hand, or by an older version) in a table marked busy
    d = json.loads(_busy_file(monkeypatch, tmp_path).read_text())
    for per in d["layers"].values():
        for e in per.values():
            del e["load"]
    loaded = LatencyTable.from_dict(d)
    assert loaded.busy is True and loaded.layers["0"]["[1, 64]"].busy is None
    with pytest.warns(RuntimeWarning, match=r"busy machine \(other processes used 1\.63"):
        out = sk.sparsify(_model(), layout="auto", latency_table=loaded)
    assert out.sparsekern_entries["busy"] == ["0 @ [1, 64]", "2 @ [1, 64]"]


def test_an_older_table_without_load_loads_and_says_nothing(monkeypatch, tmp_path):
    d = json.loads(_busy_file(monkeypatch, tmp_path).read_text())
    del d["meta"]["busy"], d["meta"]["load"]
    for per in d["layers"].values():
        for e in per.values():
            del e["load"]
    loaded = LatencyTable.from_dict(d)
    assert loaded.busy is None and loaded.layers["0"]["[1, 64]"].busy is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sk.sparsify(_model(), layout="auto", latency_table=loaded)
    assert out.sparsekern_entries["busy"] == []
    assert "busy" not in out.sparsekern_report["0"][1]


def test_a_busy_measurement_through_sparsify_is_reported_and_not_cached(monkeypatch,
                                                                        _private_cache):
    _fake_measure(monkeypatch, BUSY)
    with pytest.warns(RuntimeWarning, match="measured on a busy machine"):
        out = sk.sparsify(_model(), layout="auto", example_input=torch.randn(1, 64))
    assert out.sparsekern_entries["measured"] and out.sparsekern_entries["busy"]
    assert not _private_cache.exists() or not any(_private_cache.rglob("*.json"))


@pytest.mark.parametrize("load, why", [
    ({"busy": "yes"}, "'load' must be a dict with 'busy' true or false"),
    ([True], "'load' must be a dict"),
    ({"busy": True, "why": 3}, "load 'why' must be text or null"),
    ({"busy": False, "steal": -0.1}, "load 'steal' must be a finite non-negative number"),
    ({"busy": False, "others_cpus": float("nan")}, "load 'others_cpus' must be a finite")])
def test_a_bad_load_is_a_damaged_entry(load, why):
    e = LayerLatency.synthetic(1e-3, {"csc": [(0.1, 2e-4)]}).entry
    assert entry_problem(dict(e, load={"busy": False, "why": None})) is None
    assert why in entry_problem(dict(e, load=load))


def test_a_bad_busy_flag_in_meta_is_named():
    t = LatencyTable(["x"], {"fc": {"x": LayerLatency.synthetic(1e-3, {})}}, meta={"busy": 1})
    with pytest.raises(ValueError, match=r"meta\['busy'\] must be true, false or null, got 1"):
        LatencyTable.from_dict(t.to_dict())


def test_machine_busy_hands_back_its_figures(monkeypatch):
    from sparsekern.timing.load import judge
    monkeypatch.undo()   # the real machine_busy (tests/conftest.py replaces it)
    monkeypatch.setattr(table, "detect_load", lambda **kw: judge(2, 2.5, 1.0, 0.1))
    seen = table.load_seen(0.9)
    assert seen["busy"] and seen["others_cpus"] == 0.9 and seen["load_avg"] == 2.5
    assert seen["runnable_others"] == 1.0 and seen["steal"] == 0.1
    assert seen["why"].startswith("other processes used 0.90 CPUs")
    monkeypatch.setattr(table, "detect_load", lambda **kw: judge(2, 0.1, 0.0, 0.0))
    assert table.load_seen(None) == {"busy": False, "why": None, "others_cpus": None,
                                     "runnable_others": 0.0, "steal": 0.0, "load_avg": 0.1}
