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
    f, g, h = measure.WARM_FRACTION, measure.LLC_LIGHT, measure.LLC_HEAVY
    llc = 100 << 20
    assert context_for(0) == "warm"
    assert context_for(int(f * (2 << 20))) == "warm"
    assert context_for(int(f * (2 << 20)) + 1) == "llc"
    assert context_for(int(g * llc)) == "llc"
    assert context_for(int(g * llc) + 1) == "cold"
    # between LLC_LIGHT and LLC_HEAVY of the LLC a model runs partly cold, linearly
    assert measure.cold_share(int(g * llc)) == 0.0
    assert measure.cold_share(int((g + h) / 2 * llc)) == pytest.approx(0.5, abs=1e-6)
    assert measure.cold_share(int(h * llc)) == 1.0 == measure.cold_share(10 * llc)
    assert measure.cold_share(int(h * 1000), llc_bytes=1000) == 1.0  # another LLC size


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


# ------------------------------------------------------------------ light entries (plans in the LLC)

def _bytes_entry(dense_s, csc_s, dense_b, csc_b, signature=None):
    """An entry with stored bytes: dense, and CSC at densities 0.5 and 0.1."""
    e = LayerLatency.synthetic(dense_s, {"csc": [(0.1, csc_s[0]), (0.5, csc_s[1])]},
                               signature=signature)
    e.entry["bytes"] = {"dense": dense_b}
    for p, b in zip(e.entry["formats"]["csc"], csc_b):
        p["bytes"] = b
    return e


def _light_table(llc_bytes=1000, outside=100):
    lab = "[1, 8]"
    heavy = {n: {lab: _bytes_entry(10.0, (2.0, 6.0), 400, (60, 300))} for n in ("a", "b")}
    light = {n: {lab: _bytes_entry(4.0, (0.5, 2.5), 400, (60, 300))} for n in ("a", "b")}
    meta = {"context": "cold", "light_context": "llc", "outside_bytes": outside,
            "llc_bytes": llc_bytes}
    return LatencyTable([lab], heavy, {lab: 1.0}, {lab: None}, meta, light), lab


def test_plan_bytes_follow_the_formats_points():
    t, _ = _light_table()
    assert t.plan_bytes() == 100 + 400 + 400
    assert t.layer_bytes("a", ("csc", 0.1)) == 60 and t.layer_bytes("a", ("csc", 0.5)) == 300
    assert t.layer_bytes("a", ("csc", 0.3)) == pytest.approx(180)   # between the points
    assert t.layer_bytes("a", ("csc", 0.05)) == pytest.approx(30)   # the end segment, extended
    assert t.plan_bytes({"a": ("csc", 0.1), "b": ("csc", 0.5)}) == 100 + 60 + 300


def test_prediction_mixes_the_contexts_by_the_plans_bytes():
    t, lab = _light_table()  # LLC 1000 bytes
    lo, hi = measure.LLC_LIGHT, measure.LLC_HEAVY
    # dense: 900 bytes, a share (0.9 - lo) / (hi - lo) of the cold time
    share = (0.9 - lo) / (hi - lo)
    assert 0.0 < share < 1.0
    assert t.cold_share() == pytest.approx(share)
    assert t.predict()[lab] == pytest.approx(1.0 + 2 * (share * 10.0 + (1 - share) * 4.0))
    # both layers at 10%: 220 bytes, wholly in the LLC: the light times
    sparse = {"a": ("csc", 0.1), "b": ("csc", 0.1)}
    assert t.cold_share(sparse) == 0.0
    assert t.predict(sparse)[lab] == pytest.approx(1.0 + 0.5 + 0.5)
    # a much smaller LLC: everything cold, the table's own entries
    t.meta["llc_bytes"] = 100
    assert t.cold_share(sparse) == 1.0
    assert t.predict(sparse)[lab] == pytest.approx(1.0 + 2.0 + 2.0)
    # without light entries a table predicts from its own context, whatever the bytes
    t.light = {}
    t.meta["llc_bytes"] = 10 ** 9
    assert t.cold_share(sparse) == 1.0 and t.predict(sparse)[lab] == pytest.approx(5.0)


def test_light_entries_survive_save_and_load(tmp_path):
    t, lab = _light_table()
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    sparse = {"a": ("csc", 0.1)}
    assert set(back.light) == {"a", "b"}
    assert back.predict(sparse) == pytest.approx(t.predict(sparse))
    assert back.cold_share(sparse) == t.cold_share(sparse)


@pytest.mark.parametrize("llc, light", [(4 << 10, True), (256, False)])
def test_cold_tables_time_the_light_context_when_pruning_can_bring_the_model_in(
        monkeypatch, tmp_path, llc, light):
    # the MLP streams ~5.9 KB: with a 4 KB LLC it is cold, and its sparsest plan fits
    # (light entries measured); with 256 bytes nothing fits (none)
    monkeypatch.setattr(table, "last_level_cache_bytes", lambda: llc)
    monkeypatch.setattr(measure, "last_level_cache_bytes", lambda: llc)
    monkeypatch.setattr(measure, "private_cache_bytes", lambda: 64)
    model = _mlp()
    settings = MeasureSettings(grid=QUICK.grid, timer=TINY)  # context "auto"
    cache = DiskCache("latency", root=tmp_path)
    t = table.build_table(model, torch.randn(1, 8), settings=settings, cache=cache)
    assert t.meta["context"] == "cold" and t.meta["llc_bytes"] == llc
    assert t.meta["outside_bytes"] == 0  # every parameter is in a candidate layer
    assert bool(t.light) == light
    if light:
        assert t.meta["light_context"] == "llc" and set(t.light) == set(t.layers)
        assert all(e.entry["context"] == "llc" for per in t.light.values()
                   for e in per.values())
    else:
        assert "light_context" not in t.meta


@pytest.mark.parametrize("context, whole", [("cold", True), ("auto", False)])
def test_no_light_entries_for_a_forced_context_or_a_layers_only_table(monkeypatch, context,
                                                                      whole):
    # a context the caller forces is kept; a table without the whole model (sparsify's
    # per-layer choices) predicts no plan, so it needs no light entries
    monkeypatch.setattr(table, "last_level_cache_bytes", lambda: 4 << 10)
    monkeypatch.setattr(measure, "last_level_cache_bytes", lambda: 4 << 10)
    monkeypatch.setattr(measure, "private_cache_bytes", lambda: 64)
    settings = MeasureSettings(grid=QUICK.grid, timer=TINY, context=context)
    t = table.build_table(_mlp(), torch.randn(1, 8), settings=settings, cache=False,
                          measure_whole_model=whole)
    assert t.meta["context"] == "cold" and t.light == {} and t.cold_share() == 1.0


def test_paired_prediction_times_the_light_context_of_a_partly_cold_plan():
    model = _mlp()
    x = torch.randn(1, 8)
    lab = "[1, 8]"
    sigs = capture(model, x)
    heavy, light = {}, {}
    for name in ("0", "2", "4"):
        for d in (heavy, light):
            d[name] = {lab: _bytes_entry(1e-5, (2e-6, 6e-6), 1000, (150, 700),
                                         signature=sigs[name].to_key())}
    meta = {"context": "cold", "light_context": "llc", "outside_bytes": 0}
    t = LatencyTable([lab], heavy, {lab: 0.0}, {lab: None}, meta, light)
    choices = {"2": ("csc", 0.5)}  # 1000 + 700 + 1000 bytes: halfway through the mix
    t.meta["llc_bytes"] = int(2700 / ((measure.LLC_LIGHT + measure.LLC_HEAVY) / 2))
    share = t.cold_share(choices)
    assert share == pytest.approx(0.5, abs=1e-3)
    out = paired_prediction(t, model, _sparse_copy(model), choices, x, windows=1,
                            timer=TINY)[lab]
    w = out["windows"][0]
    assert out["cold_share"] == share
    assert {"light:0", "light:2", "light:4"} <= set(w)
    mixed = sum(share * w["layer:" + n] + (1 - share) * w["light:" + n] for n in ("0", "2", "4"))
    assert w["predicted"] == pytest.approx(w["other"] + mixed)


def test_a_format_untimed_in_the_light_context_takes_its_cold_time():
    t, lab = _light_table()
    for per in t.light.values():  # every CSC timing of the light context stayed unstable
        for e in per.values():
            for p in e.entry["formats"]["csc"]:
                p.update(status="unstable", median_s=None, model_s=None)
    sparse = {"a": ("csc", 0.1), "b": ("csc", 0.1)}
    assert t.cold_share(sparse) == 0.0
    assert t.predict(sparse)[lab] == pytest.approx(1.0 + 2.0 + 2.0)
    assert t.mixed_s("a", ("dense", 1.0), 0.0)[lab] == 4.0  # dense still from the light entry


def _signed_layers(model, x, lab):
    """Hand-made entries of the MLP's layers 0, 2, 4 at ``lab``, with their signatures (so
    paired_prediction rebuilds and re-times each): dense 10 µs, CSC at 20% 5 µs."""
    sigs = capture(model, x)
    return {n: {lab: LayerLatency.synthetic(1e-5, {"csc": [(0.2, 5e-6)]},
                                            signature=sigs[n].to_key())}
            for n in ("0", "2", "4")}


def test_paired_prediction_times_whole_models_back_to_back_and_layers_in_context(monkeypatch):
    from sparsekern.auto import verify
    calls = []
    real = verify.time_jobs

    def recording(jobs, device, timer, context):
        calls.append((sorted(jobs), context))
        return real(jobs, device, timer, "warm")  # (the contexts themselves are tested above)

    monkeypatch.setattr(verify, "time_jobs", recording)
    model = _mlp()
    x = torch.randn(1, 8)
    lab = "[1, 8]"
    layers = _signed_layers(model, x, lab)
    t = LatencyTable([lab], layers, {lab: 0.0}, {lab: None}, {"context": "cold"})
    paired_prediction(t, model, _sparse_copy(model), {"2": ("csc", 0.2)}, x, windows=2,
                      timer=TINY)
    assert calls == [(["dense", "other", "sparse"], "warm"),
                     (["layer:0", "layer:2", "layer:4"], "cold")] * 2


def test_a_plan_wholly_in_the_llc_needs_no_cold_time():
    t, lab = _light_table()
    for per in t.layers.values():  # every CSC timing of the table's own context unstable
        for e in per.values():
            for p in e.entry["formats"]["csc"]:
                p.update(status="unstable", median_s=None, model_s=None)
    sparse = {"a": ("csc", 0.1), "b": ("csc", 0.1)}
    assert t.cold_share(sparse) == 0.0
    assert t.predict(sparse)[lab] == pytest.approx(1.0 + 0.5 + 0.5)
    t.meta["llc_bytes"] = 300  # partly cold now: the missing cold time is an error
    assert 0.0 < t.cold_share(sparse) < 1.0
    with pytest.raises(ValueError, match="format 'csc' was never timed"):
        t.predict(sparse)


def test_light_times_are_capped_at_the_cold_ones():
    t, lab = _light_table()
    for per in t.light.values():
        per[lab].entry["dense"]["median_s"] = 50.0  # an LLC timing slower than memory's
    share = t.cold_share()
    assert 0.0 < share < 1.0
    assert t.predict()[lab] == pytest.approx(1.0 + 2 * 10.0)


def test_light_entries_without_bytes_leave_the_table_in_its_own_context():
    t, lab = _light_table()
    for per in list(t.layers.values()) + list(t.light.values()):
        per[lab].entry.pop("bytes")
    assert t.plan_bytes() is None and t.cold_share() == 1.0
    assert t.predict()[lab] == pytest.approx(1.0 + 2 * 10.0)


@pytest.mark.parametrize("choices, message", [
    ({"nope": ("csc", 0.1)}, r"choices name layers \['nope'\] that the latency table does not "
                             r"have; expected some of \['a', 'b'\]"),
    ({"a": ("CSC", 0.1)}, r"unknown format 'CSC'"),
    ({"a": ("csc", -0.5)}, r"choices\['a'\] = \('csc', -0.5\): the stored fraction must be "
                           r"in \(0, 1\]"),
    ({"a": ("csc", 2.0)}, r"the stored fraction must be in \(0, 1\]"),
    ({"a": ("csc", float("nan"))}, r"the stored fraction must be in \(0, 1\]"),
])
def test_predict_rejects_choices_it_cannot_mean(choices, message):
    t, _ = _light_table()
    for fn in (t.predict, t.plan_bytes, t.cold_share):
        with pytest.raises(ValueError, match=message):
            fn(choices)


def test_paired_prediction_checks_before_timing_and_restores_each_flag(monkeypatch):
    from sparsekern.auto import verify
    model = _mlp()
    x = torch.randn(1, 8)
    lab = "[1, 8]"
    layers = _signed_layers(model, x, lab)
    t = LatencyTable([lab], layers, {lab: 0.0}, {lab: None})
    sparse = _sparse_copy(model)

    def no_timing(*a, **k):
        raise AssertionError("timed before the checks")

    monkeypatch.setattr(verify, "time_jobs", no_timing)
    with pytest.raises(ValueError, match="format 'bsr4x4' was never timed"):
        paired_prediction(t, model, sparse, {"2": ("bsr4x4", 0.2)}, x, windows=1, timer=TINY)
    bigger = LatencyTable([lab], {**layers, "fc9": layers["0"]}, {lab: 0.0}, {lab: None})
    with pytest.raises(ValueError, match=r"the latency table's layers \['fc9'\] are not "
                                         r"modules of the dense model Sequential"):
        paired_prediction(bigger, model, sparse, {}, x, windows=1, timer=TINY)
    monkeypatch.undo()
    model.train()
    model[1].eval()  # a submodule in its own mode
    paired_prediction(t, model, sparse, {"2": ("csc", 0.2)}, x, windows=1, timer=TINY)
    assert model.training and model[0].training and not model[1].training


def test_a_tuple_of_example_inputs_gets_a_hint_to_pass_a_list():
    model = _mlp()
    with pytest.raises(ValueError, match=r"does not fit the model Sequential: .*positional "
                                         r"argument.*a tuple is the model's positional arguments: "
                                         r"give several example inputs as a list"):
        table.build_table(model, (torch.randn(1, 8), torch.randn(4, 8)), settings=QUICK,
                          cache=False)
