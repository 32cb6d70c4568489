"""Cache contexts, synthetic table layers, stubbed models and the paired prediction check.

Timings here are real but tiny; nothing asserts how fast anything is, only how the
numbers are put together.
"""
import pytest
import torch
from torch import nn

from sparsekern.auto import measure, table
from sparsekern.auto.cache import DiskCache
from sparsekern.auto.measure import Grid, MeasureSettings, context_for, synthetic_layer
from sparsekern.auto.signature import LayerSig, capture, signature_of
from sparsekern.auto.table import LatencyTable, LayerLatency, stubbed_copy
from sparsekern.auto.verify import paired_prediction
from sparsekern.bench.timing import TimerSettings
from sparsekern.conv import SparseConv2d
from sparsekern.nn import SparseLinear

TINY = TimerSettings(min_time=0.001, min_reps=2, max_reps=3, warmup_time=0.0,
                     max_warmup_calls=1)
QUICK = MeasureSettings(grid=Grid(sparsities=(0.5, 0.9), blocks=((4, 4),)), timer=TINY)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4)).eval()


# ------------------------------------------------------------------ contexts

def test_context_follows_the_private_and_last_level_caches(monkeypatch):
    monkeypatch.setattr(measure, "private_cache_bytes", lambda: 2 << 20)
    monkeypatch.setattr(measure, "last_level_cache_bytes", lambda: 100 << 20)
    f, g = measure.WARM_FRACTION, measure.LLC_FRACTION
    assert context_for(0) == "warm"
    assert context_for(int(f * (2 << 20))) == "warm"
    assert context_for(int(f * (2 << 20)) + 1) == "llc"
    assert context_for(int(g * (100 << 20))) == "llc"
    assert context_for(int(g * (100 << 20)) + 1) == "cold"


def test_cache_sizes_read_from_sysfs_levels(tmp_path, monkeypatch):
    from sparsekern.timing import machine
    for i, (typ, level, size) in enumerate([("Data", 1, "48K"), ("Instruction", 1, "32K"),
                                            ("Unified", 2, "2048K"), ("Unified", 3, "105M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "type").write_text(typ + "\n")
        (d / "level").write_text(f"{level}\n")
        (d / "size").write_text(size + "\n")
    real = machine._data_caches
    monkeypatch.setattr(machine, "_data_caches", lambda: real(str(tmp_path)))
    assert machine.private_cache_bytes() == 2048 << 10
    assert machine.last_level_cache_bytes() == 105 << 20
    monkeypatch.setattr(machine, "_data_caches", lambda: real(str(tmp_path / "none")))
    assert machine.private_cache_bytes() == machine.DEFAULT_PRIVATE_CACHE_BYTES
    assert machine.last_level_cache_bytes() == machine.DEFAULT_LLC_BYTES


def test_llc_context_flushes_the_private_cache_before_every_sample(monkeypatch):
    monkeypatch.setattr(measure, "private_cache_bytes", lambda: 1 << 16)
    monkeypatch.setattr(measure, "_FLUSHERS", {})
    res = measure.time_modules({"f": lambda x: x + 1}, torch.ones(4), torch.device("cpu"),
                               TINY, "llc")
    assert res["f"]["reps"] >= 2
    assert measure._FLUSHERS["llc"].nbytes == 2 << 16


def test_warm_jobs_skip_the_flush_and_run_once_before_each_sample(monkeypatch):
    flushes, calls = [], {"cold": 0, "warm": 0}

    class Flush:
        def __call__(self, fn=None, arg=None):
            flushes.append(1)

    monkeypatch.setattr(measure, "_FLUSHERS", {"cold": Flush()})

    def job(name):
        def f(x):
            calls[name] += 1
            return x
        return f

    res = measure.time_jobs({"cold": (job("cold"), 1), "warm": (job("warm"), 2)},
                            torch.device("cpu"), TINY, "cold", warm=("warm",))
    n_cold, n_warm = res["cold"]["reps"], res["warm"]["reps"]
    # one flush per cold sample, none for the warm job; the warm job runs an untimed call
    # before each of its samples (plus its warm-up calls)
    assert len(flushes) == n_cold
    assert calls["warm"] >= 2 * n_warm and calls["cold"] >= n_cold


def test_streamed_bytes_leave_out_embedding_tables():
    m = nn.Sequential(nn.Embedding(1000, 8), nn.Linear(8, 4), nn.EmbeddingBag(500, 8),
                      nn.BatchNorm1d(4))
    linear = (8 * 4 + 4) * 4
    bn = (4 + 4 + 4 + 4) * 4 + 8  # weight, bias, running mean and var (fp32), count (int64)
    assert measure.streamed_bytes(m) == linear + bn
    assert measure.module_bytes(m) == linear + bn + (1000 + 500) * 8 * 4
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight  # a tied output layer reads the whole table
    assert measure.streamed_bytes(tied) == 10 * 4 * 4


def test_settings_resolve_auto_and_reject_unknown_contexts():
    assert MeasureSettings().context == "auto"
    assert MeasureSettings().resolved(10).context == "warm"
    assert MeasureSettings().resolved(1 << 40).context == "cold"
    assert MeasureSettings(context="cold").resolved(10).context == "cold"
    with pytest.raises(ValueError, match=r"MeasureSettings.context must be one of "
                                         r"\('warm', 'llc', 'cold', 'auto'\), got 'hot'"):
        MeasureSettings(context="hot")
    with pytest.raises(ValueError,
                       match=r"context must be one of \('warm', 'llc', 'cold'\), got 'auto'"):
        measure.time_modules({"f": lambda x: x}, 1, torch.device("cpu"), TINY, "auto")


@pytest.mark.parametrize("context", ["warm", "cold"])
def test_time_modules_in_each_context(context):
    lin = nn.Linear(16, 16)
    out = measure.time_modules({"a": lin, "b": lin}, torch.randn(2, 16), torch.device("cpu"),
                               TINY, context)
    assert set(out) == {"a", "b"} and all(v["median_s"] > 0 for v in out.values())


def test_table_records_its_context_and_the_cache_keys_on_it(tmp_path):
    model = _mlp()
    x = torch.randn(1, 8)
    cache = DiskCache("latency", root=tmp_path)
    t = table.build_table(model, x, settings=QUICK, cache=cache, measure_whole_model=False)
    assert t.meta["context"] == "warm"  # a few KB of weights
    assert all(e.entry["context"] == "warm" for per in t.layers.values() for e in per.values())
    hits = cache.hits
    cold = MeasureSettings(grid=QUICK.grid, timer=TINY, context="cold")
    t2 = table.build_table(model, x, settings=cold, cache=cache, measure_whole_model=False)
    assert cache.hits == hits  # another context: measured again, not read from the cache
    assert t2.meta["context"] == "cold"


# ------------------------------------------------------------------ signatures, synthetic layers

@pytest.mark.parametrize("layer, shape", [(nn.Linear(32, 16), (3, 32)),
                                          (nn.Conv2d(4, 8, 3, padding=1, stride=2), (1, 4, 6, 6)),
                                          (nn.Conv2d(4, 8, 3, padding="same"), (1, 4, 6, 6))])
def test_signature_key_round_trip(layer, shape):
    sig = signature_of(layer, shape, 0.25)
    assert LayerSig.from_key(sig.to_key()) == sig
    import json
    assert LayerSig.from_key(json.loads(json.dumps(sig.to_key()))) == sig


@pytest.mark.parametrize("fmt, density", [("csc", 0.2), ("csc", 0.05), ("bsr4x4", 0.25),
                                          ("2:4", 0.5)])
def test_synthetic_layer_stores_the_asked_fraction(fmt, density):
    sig = signature_of(nn.Linear(64, 32), (2, 64), 0.5)
    layer, x = synthetic_layer(sig, fmt, density, seed=1)
    assert isinstance(layer, SparseLinear)
    W = layer.to_dense().weight
    assert (W != 0).float().mean().item() == pytest.approx(density, abs=0.02)
    assert x.shape == (2, 64) and (x == 0).float().mean().item() == pytest.approx(0.5, abs=0.15)
    assert layer(x).shape == (2, 32)


@pytest.mark.parametrize("spec", measure.format_specs(((4, 4), (8, 2))), ids=str)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_sort_once_pruner_matches_every_layouts_own_rule(spec, sparsity):
    # The table prunes each weight to many sparsities with one sort; it must zero exactly what
    # the layout's own magnitude_prune zeroes (a new layout that prunes otherwise fails here).
    from sparsekern.formats import layouts
    W = torch.randn(24, 40, generator=torch.Generator().manual_seed(7))
    lay = layouts.get(spec.layout)
    if lay.fixed_density is not None:  # N:M: the pattern fixes the sparsity
        sparsity = 1.0 - lay.fixed_density
    got = measure._Pruner(W).prune(spec, sparsity)
    want = lay.magnitude_prune(W, sparsity, spec.blocksize)
    assert torch.equal(got != 0, want != 0) and torch.equal(got, want)


def test_synthetic_dense_and_conv_layers():
    sig = signature_of(nn.Linear(16, 8), (1, 16))
    layer, x = synthetic_layer(sig, "dense", 1.0)
    assert type(layer) is nn.Linear and layer(x).shape == (1, 8)
    csig = signature_of(nn.Conv2d(4, 8, 3, padding=1), (1, 4, 6, 6))
    conv, cx = synthetic_layer(csig, "csc", 0.3)
    assert isinstance(conv, SparseConv2d) and conv(cx).shape == (1, 8, 6, 6)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 0.0"):
        synthetic_layer(sig, "csc", 0.0)
    with pytest.raises(ValueError, match="unknown format 'coo'"):
        synthetic_layer(sig, "coo", 0.5)


def test_stubbed_copy_skips_the_layers_and_keeps_the_model():
    model = _mlp()
    x = torch.randn(2, 8)
    stub = stubbed_copy(model, x, ["0", "2", "4"])
    with torch.no_grad():
        assert torch.equal(stub(x), model(x))
        assert torch.equal(stub(torch.zeros(2, 8)), model(x))  # the layers no longer compute
    assert type(model[0]) is nn.Linear  # the original is untouched


# ------------------------------------------------------------------ paired prediction

def _sparse_copy(model, layer="2"):
    import copy
    sparse = copy.deepcopy(model)
    with torch.no_grad():
        W = sparse[int(layer)].weight
        W.mul_(torch.rand_like(W) < 0.2)
    sparse[int(layer)] = SparseLinear.from_dense(sparse[int(layer)], "csc")
    return sparse.eval()


def test_paired_prediction_adds_up_each_window():
    # The table is hand-made with every layer's signature (so every entry is re-timed): one
    # from build_table depends on how stable its timings were, and on a loaded machine the
    # CSC entry could stay unmeasured (then predict() refuses it).
    model = _mlp()
    xs = [torch.randn(1, 8), torch.randn(4, 8)]
    labs = ["[1, 8]", "[4, 8]"]
    layers = {}
    for lab, x in zip(labs, xs):
        sigs = capture(model, x)
        for name, dense_s in (("0", 1e-5), ("2", 2e-5), ("4", 1e-5)):
            points = {"csc": [(0.2, 0.6 * dense_s)]} if name == "2" else {}
            layers.setdefault(name, {})[lab] = LayerLatency.synthetic(
                dense_s, points, signature=sigs[name].to_key())
    t = LatencyTable(labs, layers, {lab: 1e-5 for lab in labs}, {lab: None for lab in labs})
    sparse = _sparse_copy(model)
    choices = {"2": ("csc", 0.2)}
    out = paired_prediction(t, model, sparse, choices, xs, windows=3, timer=TINY)
    assert list(out) == ["[1, 8]", "[4, 8]"]
    pred = t.predict(choices)
    for lab, r in out.items():
        assert len(r["windows"]) == 3 and r["not_retimed"] == []
        assert set(r["layers_s"]) == {"0", "2", "4"}
        for w in r["windows"]:
            assert w["predicted"] == pytest.approx(
                w["other"] + w["layer:0"] + w["layer:2"] + w["layer:4"])
            assert w["error"] == pytest.approx(w["predicted"] / w["sparse"] - 1.0)
        med = lambda k: sorted(w[k] for w in r["windows"])[1]  # noqa: E731 (median of 3)
        assert r["sparse_s"] == med("sparse") and r["dense_s"] == med("dense")
        assert r["predicted_s"] == pytest.approx(med("predicted"))
        assert r["error"] == pytest.approx(r["predicted_s"] / r["sparse_s"] - 1.0)
        assert r["table_predicted_s"] == pytest.approx(pred[lab])
        assert r["table_error"] == pytest.approx(pred[lab] / r["sparse_s"] - 1.0)
        assert r["drift"] == pytest.approx(r["dense_s"] / t.predict()[lab] - 1.0)


def test_paired_prediction_keeps_hand_made_entries_as_predicted():
    model = _mlp()
    x = torch.randn(1, 8)
    sigs = capture(model, x)
    lab = "[1, 8]"
    layers = {"0": {lab: LayerLatency.synthetic(1e-3, {})},  # no signature: not rebuilt
              "2": {lab: LayerLatency.synthetic(2e-3, {"csc": [(0.2, 5e-4)]},
                                                signature=sigs["2"].to_key())},
              "4": {lab: LayerLatency.synthetic(1e-3, {}, signature=sigs["4"].to_key())}}
    t = LatencyTable([lab], layers, {lab: 0.0}, {lab: None})
    out = paired_prediction(t, model, _sparse_copy(model), {"2": ("csc", 0.2)}, x, windows=1,
                            timer=TINY)[lab]
    assert out["not_retimed"] == ["0"] and out["layers_s"]["0"] == 1e-3
    w = out["windows"][0]
    assert "layer:0" not in w and "layer:2" in w
    assert w["predicted"] == pytest.approx(w["other"] + 1e-3 + w["layer:2"] + w["layer:4"])


def test_paired_prediction_rejections():
    model = _mlp()
    x = torch.randn(1, 8)
    t = table.build_table(model, x, settings=QUICK, cache=False, measure_whole_model=False)
    with pytest.raises(ValueError, match="windows must be >= 1, got 0"):
        paired_prediction(t, model, model, {}, x, windows=0)
    with pytest.raises(ValueError, match=r"example input of shape \[3, 8\] is not a shape of "
                                         r"the table \['\[1, 8\]'\]"):
        paired_prediction(t, model, model, {}, torch.randn(3, 8), windows=1, timer=TINY)
