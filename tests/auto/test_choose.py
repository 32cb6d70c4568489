"""Format choice from a latency table: never slower than dense, the actual pattern decides,
and sparsify(layout="auto") wired to it."""
import random

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.auto import choose, table
from sparsekern.auto.choose import decide, synthetic_table
from sparsekern.auto.table import LatencyTable, LayerLatency
from sparsekern.bench import magnitude

FAST_CSC = {"csc": [(0.05, 0.1), (0.5, 0.6)]}


def test_picks_the_fastest_eligible_format():
    e = {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.3)], "bsr16x16": [(0.25, 0.27)],
                                           "2:4": [(0.5, 0.7)]})}
    d = decide("l", e, {"csc": 0.1, "bsr16x16": 0.25, "2:4": None})
    assert d.format == "bsr16x16" and d.blocksize == (16, 16) and d.layout == "bsr"
    assert d.predicted_s == {"s": 0.27} and "bsr16x16 stores 25.0%" in d.reason
    assert "capped" not in d.reason


def test_a_format_storing_everything_is_never_faster():
    """On a busy machine a BSR of padded blocks storing 100% was extrapolated from its
    sparse points as 6x faster than a (slowed) dense: a full format skips nothing."""
    e = {"s": LayerLatency.synthetic(6.0, {"bsr32x32": [(0.3, 0.9), (0.5, 0.9)],
                                           "csc": [(0.05, 8.0), (0.5, 9.0)]})}
    for full in (1.0, 1.28):
        d = decide("l", e, {"bsr32x32": full, "csc": 0.5})
        assert d.format == "dense", d.reason
        assert "csc storing 50.0%" in d.reason and "bsr32x32" not in d.reason


def test_ratio_below_the_stored_fraction_is_capped():
    """A measured ratio smaller than the stored fraction means dense's timing was slowed:
    the prediction is floored at that fraction, the reason says so, and a format whose
    real (capped) ratio is worse loses to one that did not need the cap."""
    e = {"s": LayerLatency.synthetic(1.0, {"csc": [(0.5, 0.1)], "bsr8x8": [(0.2, 0.3)]})}
    d = decide("l", e, {"csc": 0.5, "bsr8x8": 0.2})
    assert d.format == "bsr8x8" and d.predicted_s == {"s": 0.3}
    assert d.others["csc"] == {"s": 0.5}
    alone = decide("l", e, {"csc": 0.5})
    assert alone.format == "csc" and alone.predicted_s == {"s": 0.5}
    assert "capped at the stored fraction at s" in alone.reason
    slow = {"s": LayerLatency.synthetic(1.0, {"csc": [(0.97, 0.2)]})}
    d = decide("l", slow, {"csc": 0.97})
    assert d.format == "dense" and "takes 0.97x the dense time" in d.reason
    assert "capped at the stored fraction" in d.reason


def test_stays_dense_when_nothing_is_faster():
    e = {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 1.2)], "2:4": [(0.5, 0.97)]})}
    d = decide("l", e, {"csc": 0.1, "2:4": 0.5})
    assert d.format == "dense" and d.layout is None
    assert "the best, 2:4 storing 50.0%, takes 0.97x the dense time" in d.reason
    assert "at least 5% faster" in d.reason


def test_must_be_faster_at_every_shape():
    e = {"b1": LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.2)]}),
         "b64": LayerLatency.synthetic(1.0, {"csc": [(0.1, 1.5)]})}
    d = decide("l", e, {"csc": 0.1})
    assert d.format == "dense" and "1.50x the dense time at b64" in d.reason


def test_reasons_for_no_zeros_and_untimed_formats():
    e = {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.2)]})}
    d = decide("l", e, {"csc": 1.0, "2:4": None})
    assert d.format == "dense" and d.reason == "the weight has no zeros"
    assert decide("l", e, {"2:4": None}).reason == "the zeros fit no format of the latency table"
    untimed = {"s": LayerLatency({"dense": {"median_s": 1.0}, "formats": {"csc": [
        {"density": 0.1, "median_s": None, "reason": "served by the 'reference' backend"}]}})}
    d = decide("l", untimed, {"csc": 0.1})
    assert d.format == "dense" and "no format that fits the zeros has a usable timing here" in d.reason
    # every untimed format is named with its own reason, not only the first
    two = {"s": LayerLatency({"dense": {"median_s": 1.0}, "formats": {
        "csc": [{"density": 0.1, "median_s": None, "reason": "unmeasured: unstable"}],
        "sell": [{"density": 0.1, "median_s": None, "reason": "a GEMV layout: not timed"}]}})}
    d = decide("l", two, {"csc": 0.1, "sell": 0.1})
    assert "csc: unmeasured: unstable" in d.reason and "sell: a GEMV layout: not timed" in d.reason


def test_auto_never_slower_on_random_tables():
    """Whatever the table says, the chosen format is predicted faster than dense everywhere."""
    rng = random.Random(0)
    formats = ["2:4", "bsr4x4", "bsr32x32", "csc"]
    for _ in range(300):
        shapes = [f"s{i}" for i in range(rng.randint(1, 3))]
        entries = {}
        for s in shapes:
            curves = {f: sorted((rng.uniform(0.01, 1.0), rng.uniform(0.05, 3.0))
                                for _ in range(rng.randint(1, 4))) for f in formats}
            entries[s] = LayerLatency.synthetic(rng.uniform(0.5, 2.0), curves)
        dens = {f: (None if rng.random() < 0.2 else rng.uniform(0.0, 1.0)) for f in formats}
        d = decide("l", entries, dens, margin=0.05)
        for s, e in entries.items():
            assert d.predicted_s[s] <= e.dense_s + 1e-12
            if d.format != "dense":
                assert d.predicted_s[s] <= 0.95 * e.dense_s + 1e-12
                assert dens[d.format] is not None


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _pruned_mlp():
    torch.manual_seed(0)
    m = MLP()
    with torch.no_grad():
        m.fc1.weight.copy_(magnitude.prune_2to4(m.fc1.weight))
        m.fc2.weight.copy_(magnitude.prune_unstructured(m.fc2.weight, 0.9))
        m.head.weight.copy_(magnitude.prune_unstructured(m.head.weight, 0.9))
    return m


def test_sparsify_auto_follows_the_table():
    m = _pruned_mlp()
    x = torch.randn(5, 32)
    ref = m(x)
    t = synthetic_table({
        "fc1": (1.0, {"2:4": [(0.5, 0.6)], "csc": [(0.5, 0.9)]}),
        "fc2": (1.0, {"2:4": [(0.5, 0.6)], "csc": [(0.05, 0.1), (0.2, 0.3)],
                      "bsr16x16": [(0.5, 0.5), (1.0, 1.1)]}),
        "head": (1.0, {"csc": [(0.05, 2.0), (0.5, 3.0)]})})  # sparse is slower here
    out = sk.sparsify(m, layout="auto", latency_table=t)
    assert out is m
    assert isinstance(m.fc1, sk.SparseLinear) and m.fc1.layout == "2:4"
    assert isinstance(m.fc2, sk.SparseLinear) and m.fc2.layout == "csc"
    assert type(m.head) is nn.Linear
    assert m.sparsekern_report["head"][0] == "dense"
    assert "no sparse format is predicted faster than dense" in m.sparsekern_report["head"][1]
    assert m.sparsekern_decisions["fc2"].format == "csc"
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_sparsify_auto_logs_dense_layers(caplog):
    m = _pruned_mlp()
    t = synthetic_table({n: (1.0, {"csc": [(0.1, 5.0)]}) for n in ("fc1", "fc2", "head")})
    with caplog.at_level("INFO", logger="sparsekern"):
        sk.sparsify(m, layout="auto", latency_table=t)
    assert all(type(getattr(m, n)) is nn.Linear for n in ("fc1", "fc2", "head"))
    assert "sparsify auto: fc2 stays dense" in caplog.text


def test_sparsify_auto_measures_at_batch_1_without_input(monkeypatch):
    seen = []

    def fake(sig, settings=None):
        seen.append(sig)
        return LayerLatency.synthetic(1.0, FAST_CSC, sig.to_key()).entry

    monkeypatch.setattr(table, "measure_signatures",
                        lambda sigs, settings=None: [fake(g) for g in sigs])
    m = _pruned_mlp()
    sk.sparsify(m, layout="auto")
    assert sorted(s.input_shape for s in seen) == [(1, 32), (1, 64), (1, 64)][:len(seen)]
    assert {s.input_shape for s in seen} == {(1, 32), (1, 64)}
    assert m.fc2.layout == "csc"


def test_sparsify_auto_with_example_input(monkeypatch):
    seen = []

    def fake(sig, settings=None):
        seen.append(sig)
        return LayerLatency.synthetic(1.0, FAST_CSC, sig.to_key()).entry

    monkeypatch.setattr(table, "measure_signatures",
                        lambda sigs, settings=None: [fake(g) for g in sigs])
    m = _pruned_mlp()
    sk.sparsify(m, layout="auto", example_input=[torch.randn(1, 32), torch.randn(8, 32)])
    assert {s.input_shape[0] for s in seen} == {1, 8}
    assert set(m.sparsekern_decisions["fc2"].predicted_s) == {"[1, 32]", "[8, 32]"}


def test_sparsify_auto_names_an_example_input_that_does_not_fit():
    m = _pruned_mlp()
    with pytest.raises(ValueError, match=r"example_input \(\[3, 5\]\) does not fit the model "
                                         r"\w+: mat1 and mat2 shapes cannot be multiplied .*; the "
                                         r"last candidate layer it reached: 'fc1'"):
        sk.sparsify(m, layout="auto", example_input=torch.randn(3, 5))
    assert not any(isinstance(x, sk.SparseLinear) for x in m.modules())


def test_sparsify_auto_rejects_bsr_arguments():
    with pytest.raises(ValueError, match=r"layout='auto' chooses the format \(and block shape\)"):
        sk.sparsify(_pruned_mlp(), layout="auto", blocksize=(4, 4))
    with pytest.raises(ValueError, match="example_input, latency_table and margin apply to "
                                         "layout='auto' only; got layout='csc'"):
        sk.sparsify(_pruned_mlp(), layout="csc", example_input=torch.randn(1, 32))


def test_choose_layout_auto_uses_measurements(monkeypatch):
    def fake(sig, settings=None):
        assert sig.input_shape == (1, 64)
        return LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.5)], "bsr32x32": [(0.5, 0.1), (0.9, 0.7)]},
                                      sig.to_key()).entry

    monkeypatch.setattr(table, "measure_signatures",
                        lambda sigs, settings=None: [fake(g) for g in sigs])
    W = magnitude.prune_unstructured(torch.randn(16, 64), 0.9)
    layout, why = sk.nn.choose_layout(W, "auto")
    assert layout == "csc" and "predicted" in why  # bsr32x32 would store 100% of a 16x64 W


def test_sparsify_auto_on_a_single_linear():
    lin = nn.Linear(64, 64)
    with torch.no_grad():
        lin.weight.copy_(magnitude.prune_unstructured(lin.weight, 0.9))
    new = sk.sparsify(lin, layout="auto", latency_table=synthetic_table({"": (1.0, FAST_CSC)}))
    assert isinstance(new, sk.SparseLinear) and new.sparsekern_report[""][0] == "csc"


def test_reasons_name_the_layers_own_input_beside_the_models():
    """The table's shape labels are the model's inputs (a tokenizer's dict); a reason also
    names what the layer itself receives there."""
    from sparsekern.auto.signature import LayerSig
    sig = LayerSig("linear", 16, 32, True, (1, 12, 32), "torch.float32", "cpu").to_key()
    lab = "{'input_ids': [1, 12]}"
    fast = {lab: LayerLatency.synthetic(1.0, {"csc": [(0.1, 0.3)]}, sig)}
    d = decide("l", fast, {"csc": 0.1})
    assert d.format == "csc" and f"at {lab} (layer input [1, 12, 32])" in d.reason
    slow = {lab: LayerLatency.synthetic(1.0, {"csc": [(0.1, 1.3)]}, sig)}
    d = decide("l", slow, {"csc": 0.1})
    assert d.format == "dense" and f"1.30x the dense time at {lab} (layer input [1, 12, 32])" \
        in d.reason
    plain = {"s": LayerLatency.synthetic(1.0, {"csc": [(0.1, 1.3)]})}  # no signature
    assert decide("l", plain, {"csc": 0.1}).reason.endswith("takes 1.30x the dense time at s")


def test_sparsify_auto_names_a_tuple_read_as_other_positional_arguments():
    """GPT-2 given (ids, mask) reads the mask as past_key_values and fails with an
    AttributeError deep inside; the user gets sparsekern's message (chained to it)."""
    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 5)

        def forward(self, x, past=None):
            if past is not None:
                past.get_seq_length()  # a Tensor has no such attribute
            return self.fc(x)
    m = LM()
    with pytest.raises(ValueError, match=r"example_input \(\(\[2, 5\], \[2, 5\]\)\) does not fit "
                                         r"the model LM: 'Tensor' object has no attribute "
                                         r"'get_seq_length'; .*a tuple is the model's positional "
                                         r"arguments: give several example inputs as a list, and "
                                         r"named inputs \(an attention mask\) as a dict") as e:
        sk.sparsify(m, layout="auto", example_input=(torch.randn(2, 5), torch.ones(2, 5)))
    assert isinstance(e.value.__cause__, AttributeError)
