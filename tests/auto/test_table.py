"""The latency table: interpolation, model prediction, round trips, patterns, a real entry."""
import pytest
import torch
from torch import nn

from sparsekern.auto import measure, table
from sparsekern.auto.formats import FormatSpec, format_specs, parse_format
from sparsekern.auto.measure import Grid, MeasureSettings, measure_signature
from sparsekern.auto.patterns import block_density, is_semi24, pattern_densities, planned_densities
from sparsekern.auto.signature import capture, signature_of
from sparsekern.auto.table import LatencyTable, LayerLatency
from sparsekern.bench.timing import TimerSettings

CURVE = [(0.05, 1.0), (0.1, 2.0), (0.5, 6.0)]


@pytest.fixture
def entry():
    return LayerLatency.synthetic(10.0, {"csc": CURVE, "2:4": [(0.5, 7.0)]})


@pytest.mark.parametrize("density, want", [(0.05, 1.0), (0.1, 2.0), (0.5, 6.0), (0.075, 1.5),
                                           (0.3, 4.0), (0.01, 1.0), (0.9, 15.0 - 0.0)])
def test_predict_interpolates(entry, density, want):
    # below the sparsest point: that point's time; above the densest: the last slope
    # (10.0 at 0.9) or proportional to what is stored (6.0 * 0.9 / 0.5), the higher
    if density == 0.9:
        want = max(6.0 + (6.0 - 2.0) * (0.9 - 0.5) / (0.5 - 0.1), 6.0 * 0.9 / 0.5)
    assert entry.predict("csc", density) == pytest.approx(want)


def test_predict_single_point_and_dense(entry):
    assert entry.predict("2:4", 0.5) == 7.0
    assert entry.predict("2:4", 0.3) == 7.0
    assert entry.predict("2:4", 1.0) == 14.0  # proportional to what is stored
    assert entry.predict("dense", 1.0) == 10.0


def test_predict_untimed_format_is_none():
    e = LayerLatency({"dense": {"median_s": 1.0}, "formats": {"csc": [
        {"density": 0.1, "median_s": None, "status": "no-kernel", "reason": "no kernel here"}]}})
    assert e.predict("csc", 0.1) is None and e.predict("bsr4x4", 0.1) is None
    assert e.formats() == []
    assert e.untimed_reason("csc") == "no kernel here"


def test_noise_is_made_monotone():
    e = LayerLatency.synthetic(1.0, {"csc": [(0.05, 1.0), (0.1, 5.0), (0.2, 3.0), (0.5, 6.0)]})
    assert e.points("csc") == [(0.05, 1.0), (0.1, 4.0), (0.2, 4.0), (0.5, 6.0)]
    falling = LayerLatency.synthetic(1.0, {"csc": [(0.1, 5.0), (0.2, 4.0)]})
    # above the densest point: at least proportional to what is stored, never falling
    assert falling.predict("csc", 0.9) == pytest.approx(4.5 * 0.9 / 0.2)
    steep = LayerLatency.synthetic(1.0, {"csc": [(0.1, 1.0), (0.2, 4.0)]})
    assert steep.predict("csc", 0.4) == pytest.approx(10.0)  # the steeper linear slope


def _table():
    return LatencyTable(["a", "b"], {
        "x": {"a": LayerLatency.synthetic(10.0, {"csc": CURVE}),
              "b": LayerLatency.synthetic(20.0, {"csc": CURVE})},
        "y": {"a": LayerLatency.synthetic(1.0, {"csc": CURVE}),
              "b": LayerLatency.synthetic(2.0, {"csc": CURVE})}},
        {"a": 0.5, "b": 0.25}, {"a": 11.0, "b": 23.0})


def test_model_prediction_sums_layers_and_the_rest():
    t = _table()
    assert t.predict() == {"a": 11.5, "b": 22.25}
    assert t.predict({"x": ("csc", 0.1)}) == {"a": 3.5, "b": 4.25}
    with pytest.raises(ValueError, match=r"layer 'x': format 'bsr4x4' was never timed at a"):
        t.predict({"x": ("bsr4x4", 0.1)})


def test_round_trip(tmp_path):
    t = _table()
    t.save(tmp_path / "t.json")
    u = LatencyTable.load(tmp_path / "t.json")
    assert u.to_dict() == t.to_dict()
    assert u.predict({"y": ("csc", 0.3)}) == t.predict({"y": ("csc", 0.3)})


def test_formats_parse():
    assert parse_format("bsr16x8") == FormatSpec("bsr", (16, 8))
    assert parse_format("2:4").name == "2:4" and parse_format("csc").layout == "csc"
    with pytest.raises(ValueError, match=r"unknown format 'bsr0x4'; expected '1:4', '2:4', 'csc', 'sell' or "
                                         r"'bsrBMxBK'"):
        parse_format("bsr0x4")
    names = [s.name for s in format_specs(((4, 4), (32, 32)))]
    assert names == ["1:4", "2:4", "bsr4x4", "bsr32x32", "csc", "sell"]


# -- patterns ---------------------------------------------------------------------------------

def test_semi24_check():
    W = torch.tensor([[1.0, 0, 2, 0, 0, 0, 0, 3, 1]])  # K=9: last group padded
    assert is_semi24(W)
    W[0, 1] = 5
    assert not is_semi24(W)


def test_block_density_counts_padded_edge_blocks():
    W = torch.zeros(5, 6)
    W[0, 0] = W[4, 5] = 1
    assert block_density(W, 4, 4) == pytest.approx(2 / 4)
    assert block_density(torch.zeros(3, 3), 2, 2) == 0.0


def test_pattern_densities():
    W = torch.zeros(8, 8)
    W[0, 0] = W[0, 2] = 1.0
    d = pattern_densities(W, format_specs(((4, 4),)))
    assert d == {"1:4": None, "2:4": 0.5, "bsr4x4": 0.25, "csc": 2 / 64, "sell": 2 / 64}
    W[0, 2] = 0.0
    assert pattern_densities(W, [FormatSpec("1:4")]) == {"1:4": 0.25}
    W[0, 2] = 1.0
    W[0, 1] = 1.0
    assert pattern_densities(W, [FormatSpec("2:4")]) == {"2:4": None}


def test_planned_densities():
    specs = format_specs(((16, 16),))
    assert planned_densities("fine", 0.9, specs) == {"1:4": None, "2:4": None, "bsr16x16": None,
                                                      "csc": pytest.approx(0.1),
                                                      "sell": pytest.approx(0.1)}
    assert planned_densities("2:4", 0.5, specs) == {"1:4": None, "2:4": 0.5, "bsr16x16": None,
                                                     "csc": 0.5, "sell": 0.5}
    assert planned_densities("1:8", 0.0, specs)["2:4"] == 0.5
    assert planned_densities("1:4", 0.75, specs) == {"1:4": 0.25, "2:4": 0.5, "bsr16x16": None,
                                                      "csc": 0.25, "sell": 0.25}
    assert planned_densities("3:8", 0.0, specs)["2:4"] is None
    assert planned_densities((16, 16), 0.8, specs)["bsr16x16"] == pytest.approx(0.2)
    assert planned_densities((8, 8), 0.8, specs)["bsr16x16"] is None
    with pytest.raises(ValueError, match="granularity 'kernel' is not supported"):
        planned_densities("kernel", 0.5, specs)


# -- signatures and a real (tiny) measurement --------------------------------------------------

def test_capture_signatures():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
                          nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([-100.0, -100, -100, 100, 100, 100]))
    sigs = capture(model, torch.randn(2, 3, 5, 5))
    assert list(sigs) == ["0", "2", "4"]
    assert sigs["0"].kind == "conv2d" and sigs["0"].matrix_shape == (4, 27)
    assert sigs["2"].input_shape == (2, 100) and sigs["2"].matrix_shape == (6, 100)
    assert sigs["0"].input_zeros == 0.0 and sigs["4"].input_zeros == 0.5  # after the ReLU
    x = sigs["4"].example_input(torch.Generator().manual_seed(0))
    assert x.shape == (2, 6)


def test_signature_rejects_grouped_conv():
    with pytest.raises(ValueError, match="needs an nn.Linear or an nn.Conv2d with groups=1, got"):
        signature_of(nn.Conv2d(4, 4, 3, groups=2), (1, 4, 5, 5))


QUICK = MeasureSettings(grid=Grid(sparsities=(0.5, 0.9), blocks=((4, 4),)),
                        timer=TimerSettings(min_time=0.002, min_reps=2, max_reps=5,
                                            warmup_time=0.0, max_warmup_calls=1))


@pytest.mark.parametrize("layer, shape", [(nn.Linear(32, 16), (3, 32)),
                                          (nn.Conv2d(4, 8, 3, padding=1), (1, 4, 6, 6))])
def test_measured_entry_schema(layer, shape):
    e = measure_signature(signature_of(layer, shape), QUICK)
    assert e["dense"]["median_s"] > 0
    assert list(e["formats"]) == ["1:4", "2:4", "bsr4x4", "csc", "sell"]
    assert [p["sparsity"] for p in e["formats"]["csc"]] == [0.5, 0.9]
    # sell is a GEMV layout (N <= 2): timed for neither 3 tokens nor the conv's 36
    assert {p["status"] for p in e["formats"]["sell"]} == {"not-timed"}
    for pts in e["formats"].values():
        for p in pts:
            assert p["status"] in ("ok", "unstable", "no-kernel", "not-timed")  # never "slow"
            assert 0.0 <= p["density"] <= 1.0
            assert (p["median_s"] is not None) == (p["status"] == "ok")
            # the bytes-bound model predicts unstable points of memory-bound layers only
            mem = measure.memory_bound(signature_of(layer, shape), e["bytes"]["dense"],
                                       e["bytes"]["io"])
            assert (p["model_s"] is not None) == (p["status"] == "unstable" and mem)
            assert p["status"] != "ok" or p["ratio"] > 0  # the median paired ratio to dense
    assert e["formats"]["2:4"][0]["density"] == 0.5


def test_build_table_whole_model():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    t = table.build_table(model, [torch.randn(1, 8), torch.randn(4, 8)], settings=QUICK)
    assert t.shapes == ["[1, 8]", "[4, 8]"]
    assert set(t.layers) == {"0", "2"} and set(t.layers["0"]) == {"[1, 8]", "[4, 8]"}
    assert all(t.model_s[s] > 0 and t.other_s[s] >= 0 for s in t.shapes)
    assert set(t.predict()) == set(t.shapes)
    with pytest.raises(ValueError, match="example_inputs have repeated shapes"):
        table.build_table(model, [torch.randn(1, 8), torch.randn(1, 8)], settings=QUICK)


def test_layer_prediction_never_below_the_stored_fraction_of_dense():
    """A table measured while dense was slowed claims 2:4 at a tenth of dense: the model's
    prediction (what NetAdapt, AMC and the demo add up) is floored at density x dense."""
    t = LatencyTable(["s"], {"a": {"s": LayerLatency.synthetic(10.0, {"2:4": [(0.5, 1.0)],
                                                                      "csc": [(0.1, 3.0)]})}},
                     {"s": 1.0}, {"s": 11.0})
    assert t.layer_s("a", ("2:4", 0.5)) == {"s": 5.0}
    assert t.layer_s("a", ("csc", 0.1)) == {"s": 3.0}  # above the floor: as measured
    assert t.layer_s("a", ("dense", 1.0)) == {"s": 10.0}
    assert t.predict({"a": ("2:4", 0.5)}) == {"s": 6.0}
