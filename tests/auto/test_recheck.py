"""sparsify(layout="auto")'s whole-model check of the table's close calls
(sparsekern.auto.recheck): the timing logic on fake clocks, the choice of close calls, and
the wiring (adopt, keep, skip under load) with the trial's timings given."""
import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.auto import recheck, table
from sparsekern.auto.choose import decide, synthetic_table
from sparsekern.auto.table import LayerLatency

from .test_choose import _pruned_mlp
from ..fake_clock import FakeClock


def test_paired_ratios_times_each_plan_with_its_modules_and_alternates_the_order():
    clock, plan, order = FakeClock(), {"p": None}, []
    cost = {"a": 0.004, "b": 0.001}

    def install(p):
        plan["p"] = p
        order.append(p)

    def run():
        clock.t += cost[plan["p"]]

    ratios = recheck.paired_ratios(install, run, rounds=4, min_sample_s=0.01, clock=clock)
    assert ratios == pytest.approx([0.25] * 4)
    # the first calls of each, then rounds a-b, b-a, a-b, b-a
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    # k = ceil(0.01 / 0.001) = 10 calls per sample: 2 first calls + 4 rounds x (10 a + 10 b)
    assert clock.t == pytest.approx(0.005 + 4 * 10 * 0.005)


def test_paired_ratios_caps_the_calls_per_sample():
    clock, n = FakeClock(), [0]

    def run():
        n[0] += 1
        clock.t += 1e-7

    recheck.paired_ratios(lambda p: None, run, rounds=1, min_sample_s=1.0, clock=clock)
    assert n[0] == 2 + 2 * recheck.MAX_CALLS


@pytest.mark.parametrize("ratios, margin, faster", [
    ([0.8] * 7, 0.05, True),
    ([0.8] * 6 + [1.2], 0.05, True),          # one slow round in 7 is allowed
    ([0.8] * 5 + [1.2] * 2, 0.05, False),     # two are not
    ([0.97] * 7, 0.05, False),                # faster, but not by the margin
    ([0.9, 0.9, 0.9, 0.9], 0.05, True),
    ([], 0.05, False),
])
def test_clearly_faster(ratios, margin, faster):
    assert recheck.clearly_faster(ratios, margin) is faster


def test_close_calls_are_the_near_misses_and_the_narrow_wins():
    near = decide("near", {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 1.3)],
                                                             "2:4": [(0.5, 1.6)]})},
                  {"csc": 0.1, "2:4": 0.5})
    far = decide("far", {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 3.0)]})}, {"csc": 0.1})
    narrow = decide("narrow", {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.9)]})},
                    {"csc": 0.1})
    clear = decide("clear", {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.3)]})},
                   {"csc": 0.1})
    full = decide("full", {"s": LayerLatency.synthetic(1.0, {"csc": [(1.0, 1.1)]})},
                  {"csc": 1.0})
    ds = {d.name: d for d in (near, far, narrow, clear, full)}
    assert [d.format for d in ds.values()] == ["dense", "dense", "csc", "csc", "dense"]
    assert recheck.close_dense(ds) == {"near": "csc"}
    assert recheck.close_packed(ds) == ["narrow"]


# fc1: 2:4 packed for a narrow predicted gain; fc2: CSC a near miss (1.3x); head: far (4x)
TABLE = {"fc1": (1.0, {"2:4": [(0.5, 0.9)]}),
         "fc2": (1.0, {"csc": [(0.05, 1.2), (0.2, 1.4)]}),
         "head": (1.0, {"csc": [(0.05, 4.0), (0.5, 5.0)]})}


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(table, "machine_busy", lambda *a, **k: None)


def _given_ratios(monkeypatch, by_kind):
    """recheck.paired_ratios replaced: each trial swaps its plans in and runs the model once
    per plan (the swap is exercised), then reports the given ratios for its kind."""
    seen = []

    def fake(install, run, **kw):
        kind = "pack" if len(seen) == 0 and "pack" in by_kind else "unpack"
        seen.append(kind)
        for p in ("b", "a"):
            install(p)
            run()
        return list(by_kind[kind])

    monkeypatch.setattr(recheck, "paired_ratios", fake)
    return seen


def test_a_near_miss_that_runs_faster_in_the_model_is_packed(monkeypatch, quiet):
    m = _pruned_mlp()
    x = torch.randn(5, 32)
    ref = m(x)
    hits = []
    m.fc2.register_forward_hook(lambda mod, i, o: hits.append(1))
    _given_ratios(monkeypatch, {"pack": [0.7] * 7, "unpack": [1.1] * 7})
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE), example_input=x)
    assert isinstance(m.fc2, sk.SparseLinear) and m.fc2.layout == "csc"
    assert type(m.head) is nn.Linear                      # 4x: not a close call
    assert isinstance(m.fc1, sk.SparseLinear)             # the unpack trial lost
    kind, why = m.sparsekern_report["fc2"]
    assert kind == "csc" and "whole-model check" in why and "dense -> csc" in why
    assert m.sparsekern_decisions["fc2"].format == "csc"
    trials = m.sparsekern_model_check["trials"]
    assert [(t["kind"], t["layers"], t["adopted"]) for t in trials] == [
        ("pack", {"fc2": "csc"}, True), ("unpack", {"fc1": "dense"}, False)]
    hits.clear()
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    assert hits == [1]                                    # the user's hook moved with it


def test_a_trial_that_loses_leaves_the_tables_plan(monkeypatch, quiet):
    m = _pruned_mlp()
    fc2 = m.fc2
    hits = []
    fc2.register_forward_hook(lambda mod, i, o: hits.append(1))
    _given_ratios(monkeypatch, {"pack": [0.99] * 7, "unpack": [1.0] * 7})
    x = torch.randn(3, 32)
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE), example_input=x)
    assert m.fc2 is fc2 and isinstance(m.fc1, sk.SparseLinear)
    assert "whole-model" not in m.sparsekern_report["fc2"][1]
    assert not any(t["adopted"] for t in m.sparsekern_model_check["trials"])
    hits.clear()
    m(x)
    assert hits == [1]


def test_a_narrow_win_that_is_slower_in_the_model_is_unpacked(monkeypatch, quiet):
    m = _pruned_mlp()
    fc1 = m.fc1
    x = torch.randn(5, 32)
    ref = m(x)
    _given_ratios(monkeypatch, {"pack": [1.0] * 7, "unpack": [0.8] * 7})
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE), example_input=x)
    assert m.fc1 is fc1 and type(m.fc2) is nn.Linear
    kind, why = m.sparsekern_report["fc1"]
    assert kind == "dense" and "2:4 -> dense" in why
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_the_check_is_skipped_on_a_busy_machine_and_when_asked(monkeypatch):
    monkeypatch.setattr(table, "machine_busy", lambda *a, **k: "2 other runnable threads")
    seen = _given_ratios(monkeypatch, {"pack": [0.5] * 7, "unpack": [0.5] * 7})
    m = _pruned_mlp()
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE),
                example_input=torch.randn(2, 32))
    assert m.sparsekern_model_check == {
        "skipped": "the machine is busy (2 other runnable threads)", "trials": []}
    assert seen == [] and type(m.fc2) is nn.Linear
    m2 = sk.auto.sparsify_auto(_pruned_mlp(), synthetic_table(TABLE), torch.randn(2, 32),
                               check_model=False)
    assert m2.sparsekern_model_check["skipped"] == "check_model=False"
    m3 = sk.sparsify(_pruned_mlp(), layout="auto", latency_table=synthetic_table(TABLE))
    assert m3.sparsekern_model_check["skipped"] == "no example_input"
    assert seen == []


def test_a_trial_is_not_adopted_when_the_machine_became_busy(monkeypatch):
    calls = []

    def busy_after_first(*a, **k):
        calls.append(1)
        return None if len(calls) == 1 else "load average 3.1"

    monkeypatch.setattr(table, "machine_busy", busy_after_first)
    _given_ratios(monkeypatch, {"pack": [0.5] * 7, "unpack": [1.0] * 7})
    m = _pruned_mlp()
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE),
                example_input=torch.randn(2, 32))
    assert type(m.fc2) is nn.Linear
    check = m.sparsekern_model_check
    assert check["trials"][0]["kind"] == "pack" and not check["trials"][0]["adopted"]
    assert "pack trial not adopted: the machine became busy (load average 3.1)" in check["notes"]


def test_no_pack_trial_when_its_copies_would_not_fit_in_memory(monkeypatch, quiet):
    seen = _given_ratios(monkeypatch, {"pack": [0.5] * 7, "unpack": [1.0] * 7})
    monkeypatch.setattr(recheck, "available_bytes", lambda: 4096)
    m = _pruned_mlp()
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE),
                example_input=torch.randn(2, 32))
    assert type(m.fc2) is nn.Linear and len(seen) == 1
    assert [t["kind"] for t in m.sparsekern_model_check["trials"]] == ["unpack"]
    note = m.sparsekern_model_check["notes"][0]
    assert note.startswith("pack trial of 1 layers skipped: their packed copies would take ~0 MiB")


def test_available_bytes_reads_meminfo(tmp_path):
    p = tmp_path / "meminfo"
    p.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n")
    assert recheck.available_bytes(str(p)) == 1000 * 1024
    assert recheck.available_bytes(str(tmp_path / "missing")) is None


def test_paired_ratios_syncs_before_every_clock_reading():
    clock, log = FakeClock(), []
    recheck.paired_ratios(lambda p: None, lambda: log.append("run"), rounds=1,
                          min_sample_s=0.0, clock=lambda: log.append("clock") or clock(),
                          sync=lambda: log.append("sync"))
    for i, e in enumerate(log):
        if e == "clock":
            assert log[i - 1] == "sync"


def test_the_check_runs_none_of_the_users_hooks_on_the_layers_it_swaps(monkeypatch, quiet):
    m = _pruned_mlp()
    hits = {"fc1": 0, "fc2": 0}
    for n in hits:
        getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: hits.__setitem__(n, hits[n] + 1))
    seen = _given_ratios(monkeypatch, {"pack": [0.7] * 7, "unpack": [1.1] * 7})
    x = torch.randn(2, 32)
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE), example_input=x)
    assert seen == ["pack", "unpack"] and hits == {"fc1": 0, "fc2": 0}
    m(x)
    assert hits == {"fc1": 1, "fc2": 1}                   # both still registered


def test_an_unpacked_layer_comes_back_with_its_own_weight_recomputing_hook(monkeypatch, quiet):
    from torch.nn.utils import prune as torch_prune
    m = _pruned_mlp()
    torch_prune.identity(m.fc1, "weight")                 # weight_orig, weight_mask, a pre-hook
    fc1 = m.fc1
    x = torch.randn(3, 32)
    ref = m(x)
    _given_ratios(monkeypatch, {"pack": [1.0] * 7, "unpack": [0.8] * 7})
    sk.sparsify(m, layout="auto", latency_table=synthetic_table(TABLE), example_input=x)
    assert m.fc1 is fc1 and torch_prune.is_pruned(m)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    m(x).sum().backward()
    assert m.fc1.weight_orig.grad is not None             # still trains through the hook
    torch_prune.remove(m.fc1, "weight")
