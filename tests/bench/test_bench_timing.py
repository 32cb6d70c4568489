"""Timer logic with a fake clock (sparsekern.bench.timing). No real time is asserted."""
import numpy as np
import pytest
import torch

from sparsekern.bench import timing
from sparsekern.bench.timing import TimerSettings


def test_quantile_interpolates():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert timing.quantile(xs, 0.0) == 1.0
    assert timing.quantile(xs, 0.5) == 3.0
    assert timing.quantile(xs, 0.25) == 2.0
    assert timing.quantile([1.0, 2.0], 0.5) == 1.5


def test_quantile_of_nothing_raises():
    with pytest.raises(ValueError, match="empty"):
        timing.quantile([], 0.5)


def test_summarize():
    s = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median_s": 3.0, "q1_s": 2.0, "q3_s": 4.0, "iqr_s": 2.0, "min_s": 1.0,
                 "mean_s": 3.0, "reps": 5}
    with pytest.raises(ValueError, match="no samples"):
        timing.summarize([])


def test_plan_fast_call_gets_inner_loops_and_fills_min_time():
    s = TimerSettings(min_time=0.2, sample_time=1e-3, min_reps=3, max_reps=1000)
    inner, reps = timing.plan(1e-5, s)
    assert inner == 100
    assert reps == 200  # 200 samples of 1 ms = 0.2 s


def test_plan_respects_max_reps():
    s = TimerSettings(min_time=10.0, max_reps=50, max_candidate_time=100.0)
    assert timing.plan(1e-3, s) == (1, 50)


def test_plan_slow_call_is_capped_by_max_candidate_time():
    s = TimerSettings(min_time=0.2, min_reps=3, max_candidate_time=3.0)
    assert timing.plan(2.0, s) == (1, 1)
    assert timing.plan(0.5, s) == (1, 3)
    assert timing.plan(1.2, s) == (1, 2)


class FakeClock:
    """Each call of a timed function advances the clock by that function's cost."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_interleaved_round_robin_with_fake_clock():
    clock = FakeClock()
    order = []

    def make(name, cost):
        def fn(arg):
            order.append(name)
            clock.now += cost
        return fn

    s = TimerSettings(min_time=0.01, min_reps=2, max_reps=5, warmup_time=0.0,
                      max_warmup_calls=2, sample_time=0.0, max_candidate_time=1.0)
    out = timing.time_interleaved({"a": (make("a", 0.004), None), "b": (make("b", 0.001), None)},
                                  s, clock=clock)
    assert out["a"]["median_s"] == pytest.approx(0.004)
    assert out["b"]["median_s"] == pytest.approx(0.001)
    assert out["a"]["reps"] == 3 and out["b"]["reps"] == 5
    timed = order[2:]  # after one warm-up call each (the first call is slower than warmup_time=0)
    assert timed[:6] == ["a", "b", "a", "b", "a", "b"]  # interleaved while both have reps left
    assert timed[6:] == ["b", "b"]


def test_time_interleaved_passes_the_prepared_argument():
    seen = []
    timing.time_interleaved({"f": (seen.append, "ARG")},
                            TimerSettings(min_time=0.0, min_reps=1, max_reps=1,
                                          max_warmup_calls=1))
    assert set(seen) == {"ARG"}


@pytest.mark.parametrize("nbytes,l2,want", [(1 << 20, 50 << 20, 16), (40 << 20, 50 << 20, 3),
                                             (1 << 30, 50 << 20, 2), (0, 1, 2)])
def test_rotation_count(nbytes, l2, want):
    assert timing.rotation_count(nbytes, l2) == want


def test_a_slow_first_call_stands_in_for_the_warm_up():
    calls = []
    s = TimerSettings(min_time=0.0, min_reps=1, max_reps=1, warmup_time=0.01, sample_time=0.0)
    timing.time_interleaved({"f": (calls.append, 1)}, s, first_calls={"f": 0.5})
    assert len(calls) == 1  # no warm-up call, just the one sample
    calls.clear()
    timing.time_interleaved({"f": (calls.append, 1)}, s, first_calls={"f": 0.001})
    assert len(calls) >= 2  # a fast first call does not count as warm


def test_before_sample_runs_untimed_before_every_sample():
    clock = FakeClock()
    log = []

    def fn(arg):
        log.append("call")
        clock.now += 0.001

    def hook(f, arg):
        assert f is fn and arg == "A"
        log.append("hook")
        clock.now += 1.0  # must not be counted

    s = TimerSettings(min_time=0.003, min_reps=3, max_reps=3, warmup_time=0.0,
                      max_warmup_calls=1, sample_time=0.0)
    out = timing.time_interleaved({"f": (fn, "A")}, s, clock=clock, before_sample=hook)
    assert out["f"]["median_s"] == pytest.approx(0.001)
    assert log[1:] == ["hook", "call"] * 3  # after the one warm-up call


def test_time_blocks_warms_every_block_and_spreads_samples_over_rounds():
    clock = FakeClock()
    order = []

    def make(name, cost):
        def fn(arg):
            assert arg == name.upper()
            order.append(name)
            clock.now += cost
        return fn

    s = TimerSettings(min_time=0.01, min_reps=2, max_reps=10, warmup_time=0.0,
                      max_warmup_calls=1, sample_time=0.0, max_candidate_time=1.0)
    b = timing.BlockSettings(rounds=2, warm_calls=3, warm_time=0.0, max_warm_time=1.0)
    out = timing.time_blocks({"a": (make("a", 0.002), "A"), "b": (make("b", 0.001), "B")},
                             s, b, clock=clock)
    assert out["a"]["median_s"] == pytest.approx(0.002) and out["a"]["reps"] == 5
    assert out["b"]["median_s"] == pytest.approx(0.001) and out["b"]["reps"] == 10
    # one estimate call each, then per round: a's block (3 warm + 3 or 2 samples), b's block
    assert order == (["a", "b"] + ["a"] * 6 + ["b"] * 8 + ["a"] * 5 + ["b"] * 8)


def test_time_blocks_before_sample_and_first_calls():
    clock = FakeClock()
    log = []

    def fn(arg):
        assert arg == "A"
        log.append("call")
        clock.now += 0.001

    def hook(f, arg):
        assert f is fn and arg == "A"
        log.append("hook")
        clock.now += 1.0  # untimed

    s = TimerSettings(min_time=0.0, min_reps=4, max_reps=4, warmup_time=0.0005,
                      max_warmup_calls=1, sample_time=0.0)
    b = timing.BlockSettings(rounds=2, warm_calls=1, warm_time=0.0, max_warm_time=1.0)
    out = timing.time_blocks({"f": (fn, "A")}, s, b, clock=clock, before_sample=hook,
                             first_calls={"f": 0.002})
    assert out["f"]["median_s"] == pytest.approx(0.001) and out["f"]["reps"] == 4
    # the first call (0.002 s > warmup_time) stands in for the estimate; each round: one
    # warm-up call, then hook + call per sample
    assert log == (["call"] + ["hook", "call"] * 2) * 2
    log.clear()
    timing.time_blocks({"f": (fn, "A")}, s, b, clock=clock, first_calls={"f": 0.0001})
    assert log[0] == "call" and len(log) == 1 + 2 * 3  # a fast first call: estimated again


def test_time_blocks_warm_up_is_capped_in_time_and_rounds_validated():
    clock = FakeClock()
    calls = []

    def slow(arg):
        calls.append(arg)
        clock.now += 0.5

    s = TimerSettings(min_time=0.0, min_reps=1, max_reps=1, warmup_time=0.0,
                      max_warmup_calls=1, sample_time=0.0)
    timing.time_blocks({"s": (slow, 1)}, s,
                       timing.BlockSettings(rounds=1, warm_calls=10, max_warm_time=0.5),
                       clock=clock)
    assert len(calls) == 3  # estimate, one warm-up call (over the cap already), one sample
    calls.clear()
    out = timing.time_blocks({"s": (slow, 1)}, s,
                             timing.BlockSettings(rounds=3, warm_calls=10, max_warm_time=0.1),
                             clock=clock)
    # a call longer than the cap is its own warm-up: the estimate, then one sample per round
    assert len(calls) == 4 and out["s"]["reps"] == 3
    with pytest.raises(ValueError, match="BlockSettings.rounds must be >= 1, got 0"):
        timing.time_blocks({"s": (slow, 1)}, s, timing.BlockSettings(rounds=0), clock=clock)


def test_cache_flusher_writes_once_then_only_reads(monkeypatch):
    f = timing.CacheFlusher(1 << 16)
    assert f.nbytes == 1 << 16
    # written at construction: an untouched buffer would read the shared zero page
    assert float(f.buffer.min()) == 1.0 == float(f.buffer.max())
    f.buffer[3] = 7.0
    reads = []
    monkeypatch.setattr(type(f.buffer), "sum", lambda self, *a, **k: reads.append("torch"))
    f(None, torch.ones(2))
    # each flush reads the whole buffer and writes nothing (it leaves clean lines)
    assert reads == ["torch"] and float(f.buffer[3]) == 7.0


class _SpyRows:
    """Stands in for CacheFlusher._rows: records the GEMV's operands."""

    def __init__(self, rows, log):
        self.rows, self.log = rows, log

    def __matmul__(self, v):
        self.log.append((self.rows.shape, v.shape))
        return self.rows @ v


def test_cache_flusher_flushes_numpy_arguments_on_numpy(monkeypatch):
    """A NumPy argument: the flush is a NumPy GEMV over the same memory (OpenBLAS's pool, the
    one the sampled call uses), covering all of the buffer but its last partial row."""
    f = timing.CacheFlusher((1 << 16) + 12)
    rows = f._rows
    assert np.shares_memory(rows, f.buffer.numpy()) and rows.shape == (16, 1024)
    assert f.buffer.numel() - rows.size == 3  # the part past the last whole row
    log, torch_reads = [], []
    f._rows = _SpyRows(rows, log)
    monkeypatch.setattr(type(f.buffer), "sum", lambda self, *a, **k: torch_reads.append(1))
    f(None, np.ones(3, dtype=np.float32))
    assert log == [((16, 1024), (1024,))] and torch_reads == []
    f(None, torch.ones(3))  # anything else: torch's pool
    assert len(log) == 1 and torch_reads == [1]
    small = timing.CacheFlusher(8)  # fewer floats than a row: one row of all of them
    assert small._rows.shape == (1, 2)
    small(None, np.ones(1, dtype=np.float32))


@pytest.mark.parametrize("nbytes", [0, -8, 3])
def test_cache_flusher_rejects_a_size_below_one_float(nbytes):
    with pytest.raises(ValueError, match=f"CacheFlusher nbytes must be at least 4 \\(one "
                                         f"float32\\), got {nbytes}"):
        timing.CacheFlusher(nbytes)
