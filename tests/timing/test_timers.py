"""sparsekern.timing.round_robin on a fake clock: the order of calls and the samples taken."""
import pytest

from sparsekern.timing import round_robin


def test_round_robin_alternates_and_times_each_call():
    now = {"t": 0.0}
    calls = []

    def clock():
        return now["t"]

    def fn(name, cost):
        def f():
            calls.append(name)
            now["t"] += cost
        return f

    rounds = []
    out = round_robin({"a": fn("a", 1.0), "b": fn("b", 3.0)}, 3, clock=clock,
                      before_round=lambda: rounds.append(len(calls)))
    assert calls == ["a", "b"] * 3
    assert rounds == [0, 2, 4]
    assert out == {"a": [1.0, 1.0, 1.0], "b": [3.0, 3.0, 3.0]}


def test_round_robin_rejects_no_rounds():
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        round_robin({"a": lambda: None}, 0)
