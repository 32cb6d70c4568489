"""End-to-end model benchmark logic (sparsekern.bench.e2e / models) on a tiny encoder."""
import pytest
import torch

import sparsekern as sk
from sparsekern.bench import e2e, models, report, runner
from sparsekern.bench.timing import TimerSettings
from sparsekern.nn import SparseLinear

TINY = models.EncoderConfig("tiny", 64, 4, 128, 2)
FAST = TimerSettings(min_time=0.0, min_reps=2, max_reps=2, warmup_time=0.0, max_warmup_calls=1,
                     sample_time=0.0)


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny", (lambda: models.Encoder(TINY), TINY.hidden))
    return "tiny"


def test_build_is_seeded_and_leaves_the_global_rng_alone(tiny_model):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = models.build(tiny_model, seed=1)
    after = torch.rand(1)
    b = models.build(tiny_model, seed=1)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_build_rejects_unknown_model():
    with pytest.raises(ValueError, match="model must be one of"):
        models.build("gpt-5")


def test_model_shapes():
    m = models.build("minilm-l6")
    lin = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert len(lin) == 36 and {tuple(x.weight.shape) for x in lin} == {(384, 384), (1536, 384),
                                                                       (384, 1536)}
    mlp = models.LlamaMLP(64, 172)
    assert tuple(mlp.gate.weight.shape) == (172, 64) and tuple(mlp.down.weight.shape) == (64, 172)
    assert mlp(torch.randn(1, 3, 64)).shape == (1, 3, 64)


@pytest.mark.parametrize("variant", e2e.VARIANTS, ids=lambda v: v.name)
def test_make_sparse_swaps_every_linear_and_matches_the_pruned_model(tiny_model, variant):
    dense = models.build(tiny_model)
    pruned, sparse = e2e.make_sparse(dense, variant)
    assert all(not isinstance(m, torch.nn.Linear) for m in sparse.modules())
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == 12
    x = torch.randn(1, 5, TINY.hidden)
    with torch.inference_mode():
        assert runner.rel_error(sparse(x), pruned(x)) < 1e-5
        assert runner.rel_error(pruned(x), dense(x)) > 1e-3  # it really was pruned


def test_linear_share_is_a_fraction(tiny_model):
    share = e2e.linear_share(models.build(tiny_model), torch.randn(1, 4, TINY.hidden),
                             seconds=0.0, min_runs=2)
    assert 0.0 < share <= 1.0


def test_run_model_records_are_valid(tiny_model):
    recs = e2e.run_model(tiny_model, runner.RunSettings(timer=FAST), batches=(1, 3),
                         variants=e2e.VARIANTS[:2])
    assert [(r["variant"], r["batch"]) for r in recs] == [("2:4", 1), ("2:4", 3),
                                                        ("bsr32x32-s90", 1), ("bsr32x32-s90", 3)]
    for r in recs:
        assert report.model_problems(r) == []
        assert r["status"] == "ok" and r["rel_error"] < 1e-3
        assert r["layers_packed"] == r["layers_total"] == 12
        assert 0 <= r["sparse_outside_share"] <= 1
        assert r["amdahl_limit"] >= 1


def test_run_model_skips_reference_served_models_above_the_limit(tiny_model):
    s = runner.RunSettings(timer=FAST, max_reference_work_model=0)
    with sk.use_backend("reference"):
        recs = e2e.run_model(tiny_model, s, batches=(2,), variants=e2e.VARIANTS[2:])
    assert recs[0]["status"] == "skipped" and "reference backend" in recs[0]["reason"]
    assert recs[0]["layers"] == {"csc on reference": 12}
    assert report.model_problems(recs[0]) == []


def test_linear_shares_of_models_run_in_alternation(tiny_model):
    dense = models.build(tiny_model)
    _, sparse = e2e.make_sparse(dense, e2e.VARIANTS[2])
    no_linear = torch.nn.Sequential(torch.nn.LayerNorm(TINY.hidden))
    shares = e2e.linear_shares([dense, sparse, no_linear], torch.randn(1, 4, TINY.hidden),
                               seconds=0.0, min_runs=2)
    assert len(shares) == 3 and all(0.0 < x <= 1.0 for x in shares[:2])
    assert shares[2] == 0.0
    # the hooks are gone afterwards
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in sparse.modules())
