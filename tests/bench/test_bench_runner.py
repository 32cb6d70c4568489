"""Candidates, checks and case records (sparsekern.bench.candidates / runner) on tiny shapes."""
import pytest
import torch

import sparsekern as sk
from sparsekern.bench import candidates, operands, report, runner
from sparsekern.bench.candidates import Candidate
from sparsekern.bench.cases import Case, Shape
from sparsekern.bench.timing import TimerSettings

TINY = Shape("tiny", 64, 96, "test")
FAST = TimerSettings(min_time=0.0, min_reps=2, max_reps=2, warmup_time=0.0, max_warmup_calls=1,
                     sample_time=0.0)
CASES = [Case("2:4", TINY, 4, 0.5), Case("bsr", TINY, 4, 0.75, (16, 16)),
         Case("bsr", TINY, 1, 0.75, (32, 32)), Case("csc", TINY, 1, 0.9),
         Case("csc", TINY, 3, 0.9, activation="relu")]


def settings(**kw):
    return runner.RunSettings(timer=FAST, balance=5.0, **kw)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_candidate_names_match_what_is_built(case):
    W = operands.weight(case)
    built = [c.name for c in candidates.build_candidates(case, W)]
    assert built == candidates.candidate_names(case.layout, "cpu")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_run_case_gives_a_valid_record(case):
    rec = runner.run_case(case, settings())
    assert report.case_problems(rec) == []
    sk_rec = rec["candidates"]["sparsekern"]
    assert sk_rec["status"] == "ok" and sk_rec["rel_error"] < 1e-5
    for name in ("torch.F.linear", "torch.matmul", "numpy.matmul"):
        assert rec["candidates"][name]["kind"] == "dense"
        assert rec["candidates"][name]["status"] == "ok"
    assert rec["best_dense"] in ("torch.F.linear", "torch.matmul", "numpy.matmul")
    assert rec["speedup"]["best_dense"] > 0
    assert rec["format_bytes"] == sk.to_sparse(operands.weight(case), case.layout,
                                               case.blocksize).nbytes
    assert rec["bound"] == pytest.approx(rec["bytes"]["dense"] / rec["bytes"]["sparse"])


def test_relu_case_counts_only_live_columns():
    rec = runner.run_case(Case("csc", TINY, 1, 0.9, activation="relu"), settings())
    plain = runner.run_case(Case("csc", TINY, 1, 0.9), settings())
    assert rec["live_columns"] < 1.0 and plain["live_columns"] == 1.0
    assert rec["bound"] > plain["bound"]


def test_reference_served_case_above_the_limit_is_not_timed():
    with sk.use_backend("reference"):
        rec = runner.run_case(CASES[0], settings(max_reference_work=0))
    c = rec["candidates"]["sparsekern"]
    assert rec["backend"] == "reference"
    assert c["status"] == "skipped" and "reference backend" in c["reason"]
    assert rec["speedup"]["best_dense"] is None
    assert report.case_problems(rec) == []


def test_check_marks_wrong_failed_and_skipped():
    x = torch.randn(3, 8)
    ref = torch.randn(3, 5)
    wrong = runner.check(Candidate("w", "peer", fn=lambda x: torch.zeros(3, 5)), x, ref, 1e-4)
    assert wrong["status"] == "wrong" and "relative error" in wrong["reason"]
    nan = runner.check(Candidate("n", "peer", fn=lambda x: torch.full((3, 5), float("nan"))),
                       x, ref, 1e-4)
    assert nan["status"] == "wrong"
    shape = runner.check(Candidate("s", "peer", fn=lambda x: torch.zeros(4, 5)), x, ref, 1e-4)
    assert shape["status"] == "wrong" and "output shape" in shape["reason"]

    def boom(x):
        raise RuntimeError("no kernel\nsecond line")
    failed = runner.check(Candidate("f", "peer", fn=boom), x, ref, 1e-4)
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: no kernel"
    skipped = runner.check(Candidate("k", "peer", reason="not here"), x, ref, 1e-4)
    assert skipped["status"] == "skipped" and skipped["reason"] == "not here"
    ok = runner.check(Candidate("o", "dense", fn=lambda x: ref.t().clone(), out_layout="MN"),
                      x, ref, 1e-4)
    assert ok["status"] == "ok" and ok["rel_error"] == 0.0


def test_as_nm_converts_numpy_and_transposes():
    y = torch.arange(6.0).reshape(2, 3)
    assert torch.equal(candidates.as_nm(y.numpy(), "NM"), y)
    assert torch.equal(candidates.as_nm(y, "MN"), y.t())


def test_weight_cache_reuses_the_weight_across_n():
    wc = runner.WeightCache()
    s = settings()
    W1, conv1 = wc.get(Case("csc", TINY, 1, 0.9), s)
    W2, conv2 = wc.get(Case("csc", TINY, 8, 0.9), s)
    assert W1 is W2 and conv1 is conv2
    W3, _ = wc.get(Case("csc", TINY, 8, 0.7), s)
    assert W3 is not W1


def test_tolerance():
    assert runner.tolerance(torch.float32, "cpu") == 1e-4
    assert runner.tolerance(torch.float32, "cuda") == 2e-3
    assert runner.tolerance(torch.float16, "cuda") == 2e-2


def test_run_cases_calls_back_in_order():
    seen = []
    out = runner.run_cases(CASES[:2], settings(), progress=False, on_result=seen.append)
    assert [r["id"] for r in out] == [c.id for c in CASES[:2]] == [r["id"] for r in seen]


@pytest.mark.skipif(sk._extension._C is None, reason="sparsekern._C is not built")
def test_run_cases_raises_a_bad_isa_variable_before_timing(cpu_isa_env):
    """Not after the first case's timing (where the record's "isa" is read)."""
    seen = []
    cpu_isa_env("AVX2")
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_ISA='AVX2' is not a CPU instruction"):
        runner.run_cases(CASES[:1], settings(), progress=False, on_result=seen.append)
    assert seen == []


def test_predicted_call_scales_from_the_largest_smaller_n():
    hist = {"p": [(1, 0.01), (8, 0.02)]}
    assert runner.predicted_call_s(hist, "p", 32) == pytest.approx(0.08)
    assert runner.predicted_call_s(hist, "p", 8) == pytest.approx(0.02)
    assert runner.predicted_call_s(hist, "q", 32) is None
    assert runner.predicted_call_s({"p": [(8, 1.0)]}, "p", 1) is None


def test_slow_peers_are_skipped_but_sparsekern_and_dense_always_run():
    case = Case("bsr", TINY, 4, 0.75, (16, 16))
    wc = runner.WeightCache()
    s = settings(max_call_time=0.5)
    wc.get(case, s)
    wc.history.update({name: [(1, 1.0)] for name in
                       ("torch.sparse.bsr", "torch.F.linear", "sparsekern")})
    rec = runner.run_case(case, s, wc)
    bsr = rec["candidates"]["torch.sparse.bsr"]
    assert bsr["status"] == "skipped" and "max_call_time" in bsr["reason"]
    assert rec["candidates"]["torch.F.linear"]["status"] == "ok"
    assert rec["candidates"]["sparsekern"]["status"] == "ok"
    assert rec["candidates"]["torch.sparse.csr"]["status"] == "ok"
    assert report.case_problems(rec) == []
    assert wc.history["torch.sparse.csr"][-1][0] == 4  # measured times feed the history
