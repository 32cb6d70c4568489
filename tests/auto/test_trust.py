"""Trustworthy latency entries: unstable points are predicted, never cached as slow; cached
entries are re-checked; decisions say what rested on the bytes-bound model. The timer is
replaced by scripted records (no real timing)."""
import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.auto import measure, table
from sparsekern.auto.choose import decide, synthetic_table
from sparsekern.auto.measure import Grid, MeasureSettings, measure_signature, recheck_entry
from sparsekern.auto.signature import signature_of
from sparsekern.auto.table import LayerLatency
from sparsekern.bench import magnitude

GRID = MeasureSettings(grid=Grid(sparsities=(0.5, 0.9), blocks=((4, 4),),
                                 layouts=("2:4", "bsr", "csc")), context="warm")


def scripted(ratios, unstable=(), dense_s=1e-3, calls=None):
    """A stand-in for measure.time_entry_jobs: job ``name`` gets ratio ratios(name)."""
    def fake(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        if calls is not None:
            calls.append((list(jobs), context))
        assert dense_floor is None or dense_floor > 0
        out = {}
        for n in jobs:
            r = 1.0 if n == "dense" else ratios(n)
            bad = n in unstable or ("dense" in unstable and n != "dense")
            out[n] = {"median_s": r * dense_s, "iqr_s": 0.0, "ratio": r, "stable": not bad,
                      "attempts": 3 if bad else 1,
                      "why": "ratio to the reference spread 80%" if bad else ""}
        return out
    return fake


def _sig():
    return signature_of(nn.Linear(64, 32), (1, 64))


def test_unstable_points_get_the_bytes_model_not_a_slow_status(monkeypatch):
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: 50.0, unstable={"csc@0.9", "2:4@0.5"}))
    e = measure_signature(_sig(), GRID)
    csc90 = e["formats"]["csc"][1]
    assert csc90["status"] == "unstable" and csc90["median_s"] is None
    want = 1e-3 * (csc90["bytes"] + e["bytes"]["io"]) / (e["bytes"]["dense"] + e["bytes"]["io"])
    assert csc90["model_s"] == pytest.approx(want) and csc90["model_s"] < 1e-3
    assert "unmeasured: ratio to the reference spread 80%" in csc90["reason"]
    assert "bytes-bound model predicts it" in csc90["reason"]
    csc50 = e["formats"]["csc"][0]
    assert csc50["status"] == "ok" and csc50["ratio"] == 50.0  # slow, and measured as such
    assert all(p["status"] != "slow" for pts in e["formats"].values() for p in pts)


def test_bytes_model():
    assert measure.bytes_model_s(2.0, 100, 400, 100) == pytest.approx(0.8)
    sig = signature_of(nn.Linear(64, 32), (4, 64))
    assert measure.io_bytes(sig) == 4 * (64 + 32) * 4


def test_memory_bound_is_the_dense_layers_flops_per_byte():
    lin = nn.Linear(1536, 384)  # MiniLM's output.dense: 2.36 MB of weight
    dense_b = measure.module_bytes(lin)
    for tokens, want in ((1, True), (8, True), (16, False), (384, False)):
        sig = signature_of(lin, (tokens, 1536))
        flops = 2.0 * 384 * 1536 * tokens
        per_byte = flops / (dense_b + measure.io_bytes(sig))
        assert measure.memory_bound(sig, dense_b, measure.io_bytes(sig)) is want, per_byte
        assert want == (per_byte <= measure.MODEL_MAX_INTENSITY)


def test_a_compute_bound_unstable_point_is_not_predicted_from_bytes(monkeypatch):
    """The new-user trial under load: MiniLM's 384x1536 layer at 8x48 tokens, CSC at 50%
    unstable, was predicted from its bytes (0.89x a stalled dense) and chosen; it runs 1.43x
    dense on a quiet machine. On a compute-bound layer an unstable point predicts nothing, so
    nothing is chosen on it; the same points of a memory-bound layer keep the bytes model."""
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: 0.6, unstable={"csc@0.5", "csc@0.9"}))
    lin = nn.Linear(1536, 384)
    e = measure_signature(signature_of(lin, (384, 1536)), GRID)
    for p in e["formats"]["csc"]:
        assert p["status"] == "unstable" and p["median_s"] is None and p["model_s"] is None
        assert "compute bound here (over 4 FLOPs per byte)" in p["reason"]
        assert "not predicted" in p["reason"]
    lat = LayerLatency(e)
    assert lat.points("csc") == [] and lat.predict("csc", 0.5) is None
    d = decide("fc", {"[384, 1536]": lat}, {"csc": 0.5, "2:4": None, "bsr4x4": None})
    assert d.format == "dense" and "compute bound here" in d.reason
    e1 = measure_signature(signature_of(lin, (1, 1536)), GRID)
    assert all(p["model_s"] is not None and "bytes-bound model predicts it" in p["reason"]
               for p in e1["formats"]["csc"])


def test_a_busy_machine_gets_the_stricter_stall_check(monkeypatch):
    """measure_signatures looks at the load once per layer geometry: busy (CPU) -> the paired
    timing judges dense stalled from BUSY_STALL_FACTOR x its floor; quiet, or a GPU, as given."""
    from types import SimpleNamespace
    from sparsekern.timing.paired import BUSY_STALL_FACTOR, STALL_FACTOR
    seen = []
    fake = scripted(lambda n: 0.5)

    def spy(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        seen.append(s.paired.stall_factor)
        return fake(jobs, x, device, s, context, bound_ratio, dense_floor)
    monkeypatch.setattr(measure, "time_entry_jobs", spy)
    for busy, want in ((True, BUSY_STALL_FACTOR), (False, STALL_FACTOR)):
        monkeypatch.setattr(measure, "detect_load", lambda window_s: SimpleNamespace(
            busy=busy, recommended_threads=torch.get_num_threads()))
        seen.clear()
        measure_signature(_sig(), GRID)
        assert seen and set(seen) == {want}
    monkeypatch.setattr(measure, "detect_load", lambda window_s: SimpleNamespace(
        busy=True, recommended_threads=1))
    assert measure.for_the_load(GRID, "cuda") is GRID


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _load(busy, threads):
    from types import SimpleNamespace
    return lambda window_s: SimpleNamespace(busy=busy, recommended_threads=threads)


def test_a_busy_machine_is_timed_on_the_threads_the_load_leaves(monkeypatch, two_threads):
    """Busy (CPU): dense and every candidate are timed on detect_load's recommended threads
    (torch's count set for the timing only, restored after), and the entry records them;
    quiet, a GPU, or threads the caller set: unchanged."""
    seen = []
    fake = scripted(lambda n: 0.5)

    def spy(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        seen.append(torch.get_num_threads())
        return fake(jobs, x, device, s, context, bound_ratio, dense_floor)
    monkeypatch.setattr(measure, "time_entry_jobs", spy)
    for busy, want in ((True, 1), (False, 2)):
        monkeypatch.setattr(measure, "detect_load", _load(busy, 1))
        seen.clear()
        e = measure_signature(_sig(), GRID)
        assert seen and set(seen) == {want} and e["threads"] == want
        assert torch.get_num_threads() == 2
    monkeypatch.setattr(measure, "detect_load", _load(True, 1))
    assert measure.for_the_load(GRID, "cpu").threads == 1
    assert measure.for_the_load(GRID, "cuda").threads is None
    own = MeasureSettings(grid=GRID.grid, context="warm", threads=2)
    assert measure.for_the_load(own, "cpu").threads == 2
    monkeypatch.setattr(measure, "detect_load", _load(True, 4))  # never more than torch's
    assert measure.for_the_load(GRID, "cpu").threads is None


def test_an_entry_timed_on_fewer_threads_is_never_cached(monkeypatch, two_threads, tmp_path):
    """The look before timing said busy (timed on 1 of 2 threads) and the check after it said
    quiet: the entry still says busy, why, and is not stored; the next quiet run caches."""
    from sparsekern.auto.cache import DiskCache
    monkeypatch.setattr(measure, "time_entry_jobs", scripted(lambda n: 0.5))
    monkeypatch.setattr(table, "machine_busy", lambda *a, **k: None)
    monkeypatch.setattr(measure, "detect_load", _load(True, 1))
    c = DiskCache("latency", root=tmp_path)
    e1 = table.layer_entry(_sig(), GRID, cache=c)
    assert e1.entry["threads"] == 1 and e1.busy
    assert "timed on 1 of 2 threads, the cores the load left" in e1.busy_why
    assert c.load(table.entry_key(_sig(), GRID)) is None
    monkeypatch.setattr(measure, "detect_load", _load(False, 2))
    e2 = table.layer_entry(_sig(), GRID, cache=c)
    assert e2.provenance == "measured" and e2.entry["threads"] == 2 and not e2.busy
    assert c.load(table.entry_key(_sig(), GRID))["threads"] == 2


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_thread_counts_are_checked(bad):
    from sparsekern.timing.machine import torch_threads
    with pytest.raises(ValueError, match=f"MeasureSettings.threads must be a positive int or "
                                         f"None .*got {bad!r}"):
        MeasureSettings(threads=bad)
    with pytest.raises(ValueError, match=f"threads must be a positive int or None, got "
                                         f"{bad!r}"):
        with torch_threads(bad):
            pass
    e = LayerLatency.synthetic(1e-3, {"csc": [(0.1, 2e-4)]}).entry
    assert table.entry_problem(dict(e, threads=2)) is None
    assert table.entry_problem(dict(e, threads=bad)) == (
        f"'threads' must be a positive int (the threads it was timed on), got {bad!r}")


def _cached_entry():
    return {"signature": {}, "context": "warm", "dense": {"median_s": 1e-3, "iqr_s": 0.0},
            "bytes": {"dense": 8192, "io": 384},
            "formats": {
                "2:4": [{"sparsity": 0.5, "density": 0.5, "status": "ok", "median_s": 6e-4,
                         "ratio": 0.6}],
                "bsr4x4": [{"sparsity": 0.5, "density": 0.5, "status": "ok", "median_s": 9e-4,
                            "ratio": 0.9},
                           {"sparsity": 0.9, "density": 0.1, "status": "ok", "median_s": 3e-4,
                            "ratio": 0.3},
                           # no block left (a tiny layer): nothing to rebuild, never re-checked
                           {"sparsity": 0.98, "density": 0.0, "status": "ok",
                            "median_s": 1e-5, "ratio": 0.01}],
                "csc": [{"sparsity": 0.9, "density": 0.1, "status": "ok", "median_s": 2e-4,
                         "ratio": 0.2},
                        {"sparsity": 0.98, "density": 0.02, "status": "unstable",
                         "median_s": None, "model_s": 1e-4, "ratio": None}]}}


def test_recheck_times_the_fastest_point_of_each_format(monkeypatch):
    calls = []
    cached = {"2:4@0.5": 0.6, "bsr4x4@0.9": 0.3, "csc@0.9": 0.2}
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: cached[n] * 1.1, calls=calls))
    res = recheck_entry(_sig(), _cached_entry(), MeasureSettings(recheck=2))
    assert calls == [(["dense", "csc@0.9", "bsr4x4@0.9"], "warm")]
    assert res["agree"] and "2 points within 25%" in res["why"]
    assert [p["format"] for p in res["points"]] == ["csc", "bsr4x4"]


@pytest.mark.parametrize("factor, unstable, why", [
    (1.5, (), "csc@0.9 now 0.3x dense, cached 0.2x (50% off, tolerance 25%)"),
    (1.0, ("csc@0.9",), "csc@0.9 unstable now")])
def test_recheck_disagrees(monkeypatch, factor, unstable, why):
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: 0.2 * factor if n == "csc@0.9" else 0.6,
                                 unstable=set(unstable)))
    res = recheck_entry(_sig(), _cached_entry(), MeasureSettings(recheck=1))
    assert not res["agree"] and why in res["why"]


def test_recheck_of_an_entry_without_measured_points():
    e = _cached_entry()
    for pts in e["formats"].values():
        for p in pts:
            p["status"] = "unstable"
    res = recheck_entry(_sig(), e)
    assert not res["agree"] and "no measured point to re-check" in res["why"]


def test_a_slow_measurement_never_survives_a_recheck_end_to_end(monkeypatch, tmp_path):
    """Measured under load (csc 100x dense, stable), cached; a later quiet run's re-check
    disagrees, so the entry is measured again and csc is chosen."""
    from sparsekern.auto.cache import DiskCache
    loaded = {"on": True}
    monkeypatch.setattr(measure, "time_entry_jobs", scripted(
        lambda n: (100.0 if loaded["on"] else 0.2) if n.startswith("csc") else 1.5))
    c = DiskCache("latency", root=tmp_path)
    first = table.layer_entry(_sig(), GRID, cache=c)
    assert first.predict("csc", 0.1) == pytest.approx(0.1)
    loaded["on"] = False
    again = table.layer_entry(_sig(), GRID, cache=c)
    assert again.provenance == "re-measured" and "100x dense" not in again.recheck["why"]
    assert again.predict("csc", 0.1) == pytest.approx(2e-4)
    assert table.layer_entry(_sig(), GRID, cache=c).provenance == "re-checked"


def test_points_and_prediction_fall_back_to_the_model():
    e = LayerLatency(_cached_entry())
    assert e.points("csc") == [(0.02, 1e-4), (0.1, 2e-4)]
    assert e.from_model("csc", 0.02) and e.from_model("csc", 0.05)
    assert not e.from_model("csc", 0.1)
    assert e.from_model("csc", 0.5)  # extrapolated along the slope from the model point
    assert not e.from_model("dense", 1.0)
    assert e.unstable() == ["csc@0.98"]


def test_unstable_points_are_scaled_by_the_measured_efficiency():
    e = _cached_entry()
    e["formats"]["csc"][0]["bound_s"] = 1e-4           # measured 2e-4: twice its bound
    e["formats"]["csc"][1]["bound_s"] = 0.5e-4
    e["formats"]["csc"][1]["model_s"] = 0.5e-4
    lat = LayerLatency(e)
    assert lat.efficiency("csc") == 2.0 and lat.efficiency("2:4") == 1.0
    e["formats"]["csc"].append({"sparsity": 0.5, "density": 0.5, "status": "ok",
                                "median_s": 5e-3, "bound_s": 5e-4})  # 10x: slowed by load
    assert LayerLatency(e).efficiency("csc") == 2.0      # the best it achieved counts
    e["formats"]["csc"].pop()
    assert lat.points("csc") == [(0.02, 1e-4), (0.1, 2e-4)]
    e["formats"]["csc"][0]["bound_s"] = 4e-4           # faster than its bound: never below 1
    assert LayerLatency(e).efficiency("csc") == 1.0


def test_decision_says_when_it_rests_on_the_model():
    e = LayerLatency(_cached_entry())
    d = decide("fc", {"[1, 64]": e}, {"csc": 0.02, "2:4": None, "bsr4x4": None})
    assert d.format == "csc" and d.from_model == {"csc": ["[1, 64]"]}
    assert "bytes-bound model prediction at [1, 64]" in d.reason
    d2 = decide("fc", {"[1, 64]": e}, {"csc": 0.1, "2:4": None, "bsr4x4": None})
    assert d2.format == "csc" and d2.from_model == {} and "bytes-bound" not in d2.reason


def test_sparsify_auto_reports_where_numbers_came_from():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        m[0].weight.copy_(magnitude.prune_unstructured(m[0].weight, 0.98))
    t = synthetic_table({"0": (1e-3, {}), "2": (1e-3, {"csc": [(0.5, 2e-3)]})})
    t.layers["0"]["layer input"] = LayerLatency(_cached_entry(), "re-checked")
    out = sk.sparsify(m, layout="auto", latency_table=t)
    rep = out.sparsekern_entries
    assert rep["re-checked"] == ["0 @ layer input"] and rep["given"] == ["2 @ layer input"]
    assert rep["predicted"] == ["0 @ layer input: csc"]
    assert out.sparsekern_report["0"][0] == "csc" and "bytes-bound" in out.sparsekern_report["0"][1]


def test_an_entry_with_unstable_points_is_used_but_never_cached(monkeypatch, tmp_path):
    from sparsekern.auto.cache import DiskCache
    calls = []
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: 0.3, unstable={"csc@0.9"}, calls=calls))
    c = DiskCache("latency", root=tmp_path)
    e = table.layer_entry(_sig(), GRID, cache=c)
    assert e.unstable() == ["csc@0.9"] and e.predict("csc", 0.1) is not None
    assert not c.folder.exists() or not list(c.folder.iterdir())
    again = table.layer_entry(_sig(), GRID, cache=c)     # measured again, not re-checked
    assert again.provenance == "measured" and len(calls) == 2


def test_an_entry_whose_dense_timing_stalled_is_never_cached(monkeypatch, tmp_path):
    # dense waited for a core on every call: every ratio rests on it, nothing is cached
    from sparsekern.auto.cache import DiskCache
    monkeypatch.setattr(measure, "time_entry_jobs",
                        scripted(lambda n: 0.03, unstable={"dense"}))
    c = DiskCache("latency", root=tmp_path)
    e = table.layer_entry(_sig(), GRID, cache=c)
    assert not e.entry["dense"]["stable"]
    assert set(e.unstable()) >= {"csc@0.9", "csc@0.5"}   # on the bytes model, not measured
    assert not c.folder.exists() or not list(c.folder.iterdir())


def test_dense_floor_is_below_any_real_dense_call():
    sig = signature_of(nn.Linear(384, 1536), (512, 384))
    dense = nn.Linear(384, 1536)
    f = measure.dense_floor_s(sig, measure.module_bytes(dense), measure.io_bytes(sig), 2)
    # 0.6 GFLOP: at 1 TFLOP/s it takes 0.6 ms; this machine's best is ~3.5 ms
    assert 0 < f <= 2 * 384 * 1536 * 512 / 1e12
    tiny = signature_of(nn.Linear(128, 64), (1, 128))
    ft = measure.dense_floor_s(tiny, 32 * 1024, 1024, 2)
    assert 0 < ft < 1e-6   # 10 x the floor is far below one scheduler slice


def test_settle_dense_keeps_a_stable_dense_time():
    rec = {"median_s": 2e-3, "iqr_s": 1e-5, "min_s": 1.9e-3, "stable": True, "why": ""}
    out = measure.settle_dense(rec, lambda: pytest.fail("a stable dense is not re-timed"), 2)
    assert out == {"median_s": 2e-3, "iqr_s": 1e-5, "stable": True, "why": ""}


def test_settle_dense_retimes_an_unstable_dense_alone():
    tries = iter([{"median_s": 9e-3, "iqr_s": 4e-3, "min_s": 3e-4, "stable": False,
                   "why": "its own samples spread 90% (IQR/median)"},
                  {"median_s": 2.5e-4, "iqr_s": 1e-6, "min_s": 2.4e-4, "stable": True}])
    rec = {"median_s": 5.93e-3, "iqr_s": 2e-3, "min_s": 4e-3, "stable": False,
           "why": "its samples are whole scheduler slices"}
    out = measure.settle_dense(rec, lambda: next(tries), 2)
    assert out["stable"] and out["median_s"] == 2.5e-4 and out["retimed"] == 2


def test_settle_dense_falls_back_to_the_fastest_sample_and_says_so():
    recs = [{"median_s": 8e-3, "iqr_s": 4e-3, "min_s": m, "stable": False,
             "why": f"slices {i}"} for i, m in enumerate((5e-4, 3e-4))]
    tries = iter(recs)
    rec = {"median_s": 5.93e-3, "iqr_s": 2e-3, "min_s": 4e-3, "stable": False, "why": "x"}
    out = measure.settle_dense(rec, lambda: next(tries), 2)
    assert not out["stable"] and out["median_s"] == 3e-4
    assert out["estimate"] == "fastest sample" and out["retimed"] == 2
    assert out["why"] == ("dense stayed unstable over 3 timings (slices 1); its fastest "
                          "sample, 0.3 ms, stands in")


def test_a_stalled_dense_is_retimed_before_anything_is_predicted_from_it(monkeypatch):
    """The new-user trial's case: dense's paired samples were whole slices (5.93 ms) while it
    takes 0.25 ms; every point was unstable and predicted from dense's time. Re-timed alone,
    dense is stable, and the bytes model rests on 0.25 ms, not on 5.93 ms."""
    def fake(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        if list(jobs) == ["dense"]:
            return {"dense": {"median_s": 2.5e-4, "iqr_s": 0.0, "min_s": 2.4e-4,
                              "stable": True, "why": ""}}
        out = {n: {"median_s": 5e-3, "iqr_s": 0.0, "ratio": 1.0, "stable": False,
                   "attempts": 2, "why": "the reference 'dense': slices"} for n in jobs}
        out["dense"] = {"median_s": 5.93e-3, "iqr_s": 3e-3, "min_s": 4e-3, "stable": False,
                        "why": "its samples are whole scheduler slices"}
        return out
    monkeypatch.setattr(measure, "time_entry_jobs", fake)
    e = measure_signature(_sig(), GRID)
    assert e["dense"]["stable"] and e["dense"]["median_s"] == 2.5e-4
    csc90 = e["formats"]["csc"][1]
    want = 2.5e-4 * (csc90["bytes"] + e["bytes"]["io"]) / (e["bytes"]["dense"] + e["bytes"]["io"])
    assert csc90["status"] == "unstable" and csc90["model_s"] == pytest.approx(want)


def test_a_decision_over_an_unsettled_dense_says_so():
    e = _cached_entry()
    e["dense"].update(stable=False, why="dense stayed unstable over 2 timings (slices); its "
                                        "fastest sample, 1 ms, stands in")
    lat = LayerLatency(e)
    assert lat.unstable() == ["dense", "csc@0.98"]
    d = decide("fc", {"[1, 64]": lat}, {"csc": 0.1, "2:4": None, "bsr4x4": None})
    assert d.format == "csc" and d.from_model == {"dense": ["[1, 64]"]}
    assert d.reason.endswith("[dense timing unstable at [1, 64]: dense stayed unstable over 2 "
                             "timings (slices); its fastest sample, 1 ms, stands in]")
    from sparsekern.auto.choose import entries_report
    rep = entries_report({"fc": {"[1, 64]": lat}}, {"fc": d})
    assert rep["predicted"] == ["fc @ [1, 64]: dense"]
    kept = decide("fc", {"[1, 64]": lat}, {"csc": 0.9, "2:4": None, "bsr4x4": None})
    assert kept.format == "dense" and "dense timing unstable at [1, 64]" in kept.reason


def test_a_format_never_measured_here_is_not_chosen_on_its_bytes_bound():
    """Under load every CSC point of a small MiniLM layer stayed unstable: its bytes bound
    (0.77x dense at 50%) chose CSC for all 36 layers, which run 1.9x slower than dense on a
    quiet machine. A bound with no measurement of the kernel on the layer predicts nothing."""
    e = _cached_entry()
    for p in e["formats"]["csc"]:
        p.update(status="unstable", median_s=None, model_s=0.77e-3 * p["density"] / 0.5)
    lat = LayerLatency(e)
    assert lat.efficiency("csc") is None and lat.points("csc") == []
    assert lat.predict("csc", 0.5) is None and "csc" not in lat.formats()
    assert "stayed unstable" in lat.untimed_reason("csc")
    d = decide("fc", {"[1, 12]": lat}, {"csc": 0.5, "2:4": None, "bsr4x4": None})
    assert d.format == "dense" and "bytes bound alone does not choose it" in d.reason
    # one measured point calibrates the model for the others (as before)
    e["formats"]["csc"][0].update(status="ok", median_s=2e-4, bound_s=1e-4)
    lat = LayerLatency(e)
    assert lat.efficiency("csc") == 2.0 and lat.from_model("csc", 0.02)


def test_a_weight_without_zeros_is_not_timed(monkeypatch):
    """sparsify(layout="auto") measures only the layers whose weight holds a zero: one
    without any stays dense in every format, and timing it only cost time (and, under load, a
    busy note on a layer that could not change). With a given table nothing changes."""
    timed = []
    real = table.measure_signatures

    def spy(sigs, settings=None):
        timed.extend(s.matrix_shape for s in sigs)
        return real(sigs, settings)
    monkeypatch.setattr(table, "measure_signatures", spy)
    monkeypatch.setattr(measure, "time_entry_jobs", scripted(lambda n: 0.5))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        model[0].weight[torch.rand_like(model[0].weight) < 0.9] = 0
    x = torch.randn(4, 64)
    want = model(x)
    out = sk.sparsify(model, layout="auto", example_input=x)
    assert timed and set(timed) == {(32, 64)}
    assert out.sparsekern_report["2"] == ("dense", "the weight has no zeros (not timed)")
    assert out.sparsekern_report["0"][0] != "dense"
    torch.testing.assert_close(out(x), want, rtol=1e-5, atol=1e-5)
    timed.clear()  # without an example input: the batch-1 entries, the same layers
    model2 = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        model2[0].weight[torch.rand_like(model2[0].weight) < 0.9] = 0
        model2[2].weight[0, 0] = float("nan")  # a NaN is not a zero
    out2 = sk.sparsify(model2, layout="auto")
    assert set(timed) == {(32, 64)}
    assert out2.sparsekern_report["2"] == ("dense", "the weight has no zeros (not timed)")
