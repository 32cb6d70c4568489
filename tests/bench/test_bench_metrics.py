"""Speedup arithmetic, best-dense selection, geometric mean, Amdahl (sparsekern.bench.metrics)."""
import math

import pytest

from sparsekern.bench import metrics


def cand(kind, median=None, status="ok"):
    timing = None if median is None else {"median_s": median}
    return {"kind": kind, "status": status if median is not None else "skipped", "timing": timing}


def test_best_dense_is_the_fastest_timed_dense_candidate():
    cands = {"sparsekern": cand("sparsekern", 1.0), "torch.F.linear": cand("dense", 3.0),
             "torch.matmul": cand("dense", 2.0), "numpy.matmul": cand("dense", 2.5),
             "torch.sparse.csr": cand("peer", 0.5)}
    assert metrics.best_dense(cands) == ("torch.matmul", 2.0)


def test_best_dense_ignores_peers_and_untimed_candidates():
    cands = {"sparsekern": cand("sparsekern", 1.0), "torch.F.linear": cand("dense", 3.0),
             "numpy.matmul": cand("dense"), "torch.sparse.csr": cand("peer", 0.1),
             "torch.matmul": {"kind": "dense", "status": "wrong", "timing": None}}
    assert metrics.best_dense(cands) == ("torch.F.linear", 3.0)


def test_best_dense_none_when_no_dense_was_timed():
    assert metrics.best_dense({"sparsekern": cand("sparsekern", 1.0)}) == (None, None)


def test_speedup_is_other_time_over_sparse_time():
    assert metrics.speedup(3.0, 1.5) == 2.0
    assert metrics.speedup(1.0, 4.0) == 0.25
    assert metrics.speedup(None, 1.0) is None
    assert metrics.speedup(1.0, None) is None
    assert metrics.speedup(1.0, 0.0) is None


def test_speedups_cover_best_dense_every_dense_and_every_peer():
    cands = {"sparsekern": cand("sparsekern", 2.0), "torch.F.linear": cand("dense", 4.0),
             "numpy.matmul": cand("dense", 3.0), "torch.sparse.csr": cand("peer", 8.0),
             "torch.sparse.bsr": cand("peer")}
    assert metrics.speedups(cands) == {"best_dense": 1.5, "numpy.matmul": 1.5,
                                       "torch.F.linear": 2.0, "torch.sparse.bsr": None,
                                       "torch.sparse.csr": 4.0}


def test_speedups_are_none_when_sparsekern_was_not_timed():
    cands = {"sparsekern": cand("sparsekern"), "torch.F.linear": cand("dense", 4.0)}
    assert metrics.speedups(cands) == {"best_dense": None, "torch.F.linear": None}


def test_median_s_needs_status_ok():
    assert metrics.median_s({"status": "wrong", "timing": {"median_s": 1.0}}) is None
    assert metrics.median_s({"status": "ok", "timing": {"median_s": 0.25}}) == 0.25


def test_geomean_skips_missing_and_nonpositive():
    assert metrics.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert metrics.geomean([2.0, None, 0.0, 8.0, float("nan")]) == pytest.approx(4.0)
    assert metrics.geomean([None]) is None


def test_amdahl():
    assert metrics.amdahl(0.5, 2.0) == pytest.approx(1 / (0.5 + 0.25))
    assert metrics.amdahl(1.0, 4.0) == pytest.approx(4.0)
    assert metrics.amdahl(0.0, 100.0) == pytest.approx(1.0)
    assert metrics.amdahl_limit(0.8) == pytest.approx(5.0)
    assert math.isinf(metrics.amdahl_limit(1.0))


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_amdahl_rejects_a_share_outside_0_1(share):
    with pytest.raises(ValueError, match="linear_share must be in"):
        metrics.amdahl(share, 2.0)
    with pytest.raises(ValueError, match="linear_share must be in"):
        metrics.amdahl_limit(share)


def test_amdahl_rejects_nonpositive_speedup():
    with pytest.raises(ValueError, match="layer_speedup must be > 0"):
        metrics.amdahl(0.5, 0.0)
