"""Paired timing (sparsekern.timing.paired) with a fake clock: no real time is measured."""
import pytest

from sparsekern.timing.paired import PairedSettings, time_paired, verdict
from ..fake_clock import FakeClock as Clock


def job(clock, durations):
    """A callable that advances ``clock`` by the next of ``durations`` (the last repeats)."""
    it = iter(durations)
    last = [durations[0]]

    def fn(_):
        try:
            last[0] = next(it)
        except StopIteration:
            pass
        clock.t += last[0]
    return fn


# warmup_time=0: the warm-up is a single call; samples last >= 1 ms (inner calls)
S = PairedSettings(rounds=5, tolerance=0.2, retries=2, sample_time=1e-3, warm_calls=0,
                   warmup_time=0.0, max_warmup_calls=2)


def test_stable_candidate_reports_its_paired_ratio():
    c = Clock()
    res = time_paired({"dense": (job(c, [1e-3]), None), "csc": (job(c, [2.5e-4]), None)},
                      "dense", S, clock=c)
    assert res["csc"]["stable"] and res["csc"]["attempts"] == 1
    assert res["csc"]["ratio"] == pytest.approx(0.25)
    assert res["csc"]["inner"] == 4 and res["dense"]["inner"] == 1  # samples of >= 1 ms
    assert res["csc"]["median_s"] == pytest.approx(2.5e-4)
    assert res["csc"]["rounds"] == 5 and res["dense"]["rounds"] == 5
    assert list(res) == ["dense", "csc"]


def test_a_burst_that_hits_a_pair_leaves_the_ratio_alone():
    c = Clock()
    # warm-up: 2 calls each; then dense and the candidate alternate, round 3 is 4x slower
    dense = [1e-3] + [1e-3, 1e-3, 4e-3, 1e-3, 1e-3]
    cand = [5e-4] + [5e-4] * 2 * 2 + [2e-3] * 2 + [5e-4] * 4   # inner = 2
    res = time_paired({"dense": (job(c, dense), None), "bsr": (job(c, cand), None)},
                      "dense", S, clock=c)
    assert res["bsr"]["stable"] and res["bsr"]["ratio"] == pytest.approx(0.5)
    assert res["bsr"]["ratio_spread"] == pytest.approx(0.0)


def test_unstable_candidate_is_retimed_then_given_up():
    c = Clock()
    cand = [2e-3] + [2e-3, 16e-3] * 100  # preempted every other sample (inner = 1)
    res = time_paired({"dense": (job(c, [1e-3]), None), "2:4": (job(c, cand), None)},
                      "dense", S, clock=c)
    r = res["2:4"]
    assert not r["stable"] and r["attempts"] == S.retries + 1
    assert "spread" in r["why"] and "20% tolerance" in r["why"]


def test_unstable_first_attempt_stable_on_retry():
    c = Clock()
    # inner = 1: attempt 1 has two wild samples of five; attempt 2 is steady
    cand = [2e-3] + [2e-3, 16e-3, 2e-3, 16e-3, 2e-3] + [2e-3] * 100
    res = time_paired({"dense": (job(c, [1e-3]), None), "csc": (job(c, cand), None)},
                      "dense", S, clock=c)
    assert res["csc"]["stable"] and res["csc"]["attempts"] == 2
    assert res["csc"]["ratio"] == pytest.approx(2.0)


def test_whole_scheduler_slices_are_not_a_measurement():
    c = Clock()
    # warm calls show the kernel takes 0.5 ms; every timed call then takes a 12 ms slice
    cand = [5e-4] + [12e-3] * 1000
    dense = [3e-3]
    res = time_paired({"dense": (job(c, dense), None), "csc": (job(c, cand), None)},
                      "dense", S, clock=c)
    assert not res["csc"]["stable"]
    assert "whole scheduler slices" in res["csc"]["why"]


def test_slices_far_above_the_bound_are_not_a_measurement():
    c = Clock()
    cand = [16e-3] * 1000          # every call, warm-up included, is 4 slices
    jobs = {"dense": (job(c, [1e-4]), None), "csc": (job(c, cand), None)}
    assert time_paired(jobs, "dense", S, clock=c)["csc"]["stable"]   # nothing says otherwise
    c2 = Clock()
    jobs = {"dense": (job(c2, [1e-4]), None), "csc": (job(c2, cand), None)}
    res = time_paired(jobs, "dense", S, clock=c2, bound_ratio={"csc": 0.15})
    assert not res["csc"]["stable"] and "can take 0.015 ms" in res["csc"]["why"]


def test_cold_context_flushes_before_every_sample_and_calls_once():
    c = Clock()
    flushes = []
    res = time_paired({"dense": (job(c, [1e-4]), None), "csc": (job(c, [5e-5]), None)},
                      "dense", S, clock=c, before_sample=lambda f, a: flushes.append(f))
    assert res["csc"]["inner"] == 1 and res["dense"]["inner"] == 1
    assert len(flushes) == 2 * S.rounds  # dense + candidate, every round
    assert res["csc"]["stable"]


def test_reference_alone_is_timed_in_rounds():
    c = Clock()
    res = time_paired({"dense": (job(c, [1e-3]), None)}, "dense", S, clock=c)
    assert res["dense"]["rounds"] == S.rounds and res["dense"]["stable"]


def test_verdict_thresholds():
    s = PairedSettings(tolerance=0.2)
    assert verdict([1.0, 1.0, 1.1, 1.0, 0.95], [1e-3] * 5, 1e-3, s)[0]
    ok, why = verdict([1.0, 2.0, 1.0, 2.0, 1.5], [1e-3] * 5, 1e-3, s)
    assert not ok and "spread 67%" in why
    # quantized samples are fine when the fastest call was not much faster (a slow kernel)
    assert verdict([4.0] * 5, [8e-3] * 5, 7e-3, s)[0]
    assert not verdict([4.0] * 5, [8e-3] * 5, 1e-3, s)[0]
    assert verdict([4.0] * 5, [8e-3] * 5, 1e-3, s, check_slices=False)[0]


@pytest.mark.parametrize("bad, msg", [
    (dict(rounds=2), r"PairedSettings.rounds must be >= 3 \(a spread needs samples\), got 2"),
    (dict(tolerance=1.5), r"PairedSettings.tolerance must be in \(0, 1\), got 1.5"),
    (dict(retries=-1), "PairedSettings.retries must be >= 0, got -1")])
def test_settings_rejections(bad, msg):
    with pytest.raises(ValueError, match=msg):
        PairedSettings(**bad)


def test_unknown_reference():
    with pytest.raises(ValueError, match=r"reference 'dense' is not among the jobs \['a'\]"):
        time_paired({"a": (lambda x: None, None)}, "dense", S)


def test_a_stalled_reference_makes_every_ratio_unstable():
    c = Clock()
    # dense's warm-up shows 0.05 ms; every timed dense call then waits 8 ms (two slices)
    dense = [5e-5] * 2 + [8e-3] * 1000
    res = time_paired({"dense": (job(c, dense), None), "csc": (job(c, [2e-4]), None)},
                      "dense", S, clock=c)
    assert not res["csc"]["stable"] and res["csc"]["attempts"] == S.retries + 1
    assert "the reference 'dense'" in res["csc"]["why"]
    assert "whole scheduler slices" in res["csc"]["why"]
    assert not res["dense"]["stable"] and "whole scheduler slices" in res["dense"]["why"]


def test_a_reference_stalled_from_its_first_call_needs_the_floor():
    # every dense call, warm-up included, takes 8 ms: only a physical floor can tell
    def run(floor):
        c = Clock()
        jobs = {"dense": (job(c, [8e-3] * 1000), None), "csc": (job(c, [2e-4]), None)}
        return time_paired(jobs, "dense", S, clock=c, reference_floor=floor)
    assert run(None)["csc"]["stable"]          # nothing says otherwise
    res = run(1e-5)                            # 8 ms > 10 x 0.01 ms, in whole slices
    assert not res["csc"]["stable"] and "physical floor" in res["csc"]["why"]
    assert not res["dense"]["stable"]
    assert run(1e-3)["csc"]["stable"]          # 8 ms < 10 x 1 ms: could be its real time


def test_a_reference_of_real_whole_slice_length_is_not_flagged():
    # a dense layer that really takes 4 ms (its warm-up too), floor 1 ms: not a stall
    c = Clock()
    jobs = {"dense": (job(c, [4e-3] * 1000), None), "bsr": (job(c, [1e-3]), None)}
    res = time_paired(jobs, "dense", S, clock=c, reference_floor=1e-3)
    assert res["bsr"]["stable"] and res["dense"]["stable"]
    assert res["bsr"]["ratio"] == pytest.approx(0.25)


def test_the_floor_judges_the_reference_in_a_cold_context_too():
    c = Clock()
    jobs = {"dense": (job(c, [8e-3] * 1000), None), "csc": (job(c, [2e-4]), None)}
    res = time_paired(jobs, "dense", S, clock=c, before_sample=lambda fn, arg: None,
                      reference_floor=1e-5)
    assert not res["csc"]["stable"] and "the reference 'dense'" in res["csc"]["why"]


@pytest.mark.parametrize("stall", [6.14e-3, 5.3e-3, 2.9e-3])  # all > 1000 x the 2 us floor
def test_a_reference_stalled_in_slices_of_any_length_is_flagged(stall):
    """EEVDF's slices are not 4 ms: a dense call that waits for a core from its first call
    took 6.14 ms (no multiple of 4 ms) against a quiet 0.02 ms. Far above its physical
    floor for a whole millisecond, it is a stall whatever the samples' pattern."""
    def run(floor):
        c = Clock()
        jobs = {"dense": (job(c, [stall] * 1000), None), "bsr": (job(c, [2e-4]), None)}
        return time_paired(jobs, "dense", S, clock=c, reference_floor=floor)
    res = run(2e-6)  # a Linear 512 -> 100 at 16 tokens: 1.6 MFLOP (3070x at 6.14 ms)
    assert not res["bsr"]["stable"] and "physical floor" in res["bsr"]["why"]
    assert not res["dense"]["stable"] and "waited for a core" in res["dense"]["why"]
    assert run(1e-5)["bsr"]["stable"]  # 614x: a large GEMV from slow memory can be that
    assert run(1e-4)["bsr"]["stable"]  # far below 1000 x its floor: could be its real time
    assert run(None)["bsr"]["stable"]  # no floor given: nothing says otherwise


def test_on_a_busy_machine_the_stall_check_is_stricter():
    """The new-user check under a spinner: MiniLM's 384x1536 layer at 16 tokens, dense 11.4 ms
    on every call (quiet 0.174 ms), CSC paired with it 5.7 ms: 620x dense's 18.4 us floor, so
    the default check (1000x) let the pair through as stable. With BUSY_STALL_FACTOR (the
    caller's choice when the machine is busy) it is a stall; a dense call 60x its floor is
    not."""
    from dataclasses import replace
    from sparsekern.timing.paired import BUSY_STALL_FACTOR

    def run(settings, dense_s):
        c = Clock()
        jobs = {"dense": (job(c, [dense_s] * 1000), None), "csc": (job(c, [dense_s / 2]), None)}
        return time_paired(jobs, "dense", settings, clock=c, reference_floor=18.4e-6)
    busy = replace(S, stall_factor=BUSY_STALL_FACTOR)
    assert run(S, 11.4e-3)["csc"]["stable"]
    res = run(busy, 11.4e-3)
    assert not res["csc"]["stable"] and "620x its physical floor" in res["csc"]["why"]
    assert not res["dense"]["stable"] and "waited for a core" in res["dense"]["why"]
    assert run(busy, 1.1e-3)["csc"]["stable"]  # 60x: a slow but real dense call
    with pytest.raises(ValueError, match=r"PairedSettings.stall_factor must be > 1, got 0.5"):
        PairedSettings(stall_factor=0.5)


def test_a_short_reference_far_above_its_floor_is_not_a_stall():
    """Below a millisecond, a small call's fixed costs (dispatch, threads) can put it far
    above its floor on a quiet machine: no verdict from the floor alone."""
    c = Clock()
    jobs = {"dense": (job(c, [2e-5] * 1000), None), "csc": (job(c, [1e-5]), None)}
    res = time_paired(jobs, "dense", S, clock=c, reference_floor=1e-8)
    assert res["csc"]["stable"] and res["dense"]["stable"]
