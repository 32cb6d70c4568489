"""Hugging Face layers: transformers' Conv1D (GPT-2) and BERT's Linears through prune,
sparsify (fixed layouts and "auto"), prune.convert and save/load, on tiny random configs
built in-process (no download)."""
import copy
import json
import logging
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import _layers, prune
from sparsekern.prune import sequential
from sparsekern.auto import synthetic_table
from sparsekern.nn import SparseLinear
from sparsekern.prune.layers import prunable_layers

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                  n_head=2, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2Model(cfg).eval()


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=16, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg).eval()


def ids(batch=2, seq=8, seed=1):
    return torch.randint(0, 64, (batch, seq), generator=torch.Generator().manual_seed(seed))


def conv1d_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, Conv1D)]


def hidden(model, x):
    with torch.no_grad():
        return model(x).last_hidden_state


# -- the core accessors ------------------------------------------------------------------

def test_conv1d_is_a_transposed_linear():
    c = Conv1D(6, 8)  # nf=6 outputs, nx=8 inputs: weight [8, 6]
    assert _layers.kind(c) == "conv1d_hf" and _layers.is_linear(c) and _layers.is_packable(c)
    assert _layers.dims(c) == (6, 8) and _layers.in_features(c) == 8
    W = _layers.weight_matrix(c)
    assert W.shape == (6, 8) and torch.equal(W, c.weight.t())
    with torch.no_grad():  # a view: writes reach the real parameter
        W[2, 5] = 0.0
    assert c.weight[5, 2] == 0
    m = torch.rand(6, 8) > 0.5
    assert torch.equal(_layers.from_matrix(c, m), m.t())
    assert torch.equal(_layers.to_matrix(c, _layers.from_matrix(c, m)), m)
    x = torch.randn(3, 8)
    assert torch.allclose(c(x), x @ W.T + c.bias)


def test_a_class_named_conv1d_outside_transformers_is_not_taken_for_one():
    class Conv1D(nn.Module):  # noqa: N801  (same name, another package)
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 4))

    assert _layers.kind(Conv1D()) is None and not _layers.looks_linear(Conv1D())
    assert _layers.kind(nn.Conv1d(4, 4, 1)) is None and _layers.looks_linear(nn.Conv1d(4, 4, 1))


# -- pruning Conv1D ----------------------------------------------------------------------------

def test_gpt2_conv1d_layers_are_prunable_along_their_input_dim():
    model = tiny_gpt2()
    names = conv1d_names(model)
    assert set(names) <= set(prunable_layers(model)) and len(names) == 8
    masks = prune.prune_model(model, granularity="2:4")
    for n in names:
        m = model.get_submodule(n)
        assert masks[n].shape == m.weight.shape  # masks keep the parameter's [in, out] shape
        W = _layers.weight_matrix(m).detach()  # [out, in]: 2 of every 4 consecutive inputs
        assert int((W.reshape(W.shape[0], -1, 4) != 0).sum(-1).max()) <= 2
        assert sk.Semi24.from_dense(W).shape == W.shape


def test_wanda_on_conv1d_uses_the_input_norms_of_each_input_feature():
    model = tiny_gpt2()
    name = "h.0.mlp.c_fc"
    layer = model.get_submodule(name)
    calib = [ids(seed=s) for s in range(2)]
    seen = []
    h = layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    with torch.no_grad():
        for x in calib:
            model(x)
    h.remove()
    X = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double()
    W = _layers.weight_matrix(layer).detach().double()  # [out, in]
    score = W.abs() * X.norm(dim=0)  # |W| * ||X_j||, compared within each output row
    masks = prune.prune_model(model, 0.5, "fine", criterion="wanda", calib=calib,
                              layers=[name], apply=False)
    keep = _layers.to_matrix(layer, masks[name])
    k = W.shape[1] // 2
    expected = torch.ones_like(keep)
    expected.scatter_(1, torch.argsort(score, dim=1, stable=True)[:, :k], False)
    assert torch.equal(keep, expected)


# -- sparsify / convert: same outputs as the masked dense model ----------------------------

@pytest.mark.parametrize("gran,ratio,layout,bs", [("2:4", None, "2:4", None),
                                                  ("fine", 0.8, "csc", None),
                                                  ((4, 4), 0.75, "bsr", (4, 4))])
def test_sparsified_gpt2_matches_the_masked_dense_model(gran, ratio, layout, bs):
    model = tiny_gpt2()
    prune.prune_model(model, ratio, gran, layers=conv1d_names(model))
    x = ids()
    ref = hidden(model, x)
    sparse = sk.sparsify(copy.deepcopy(model), layout, blocksize=bs,
                         max_density=1.0 if layout != "2:4" else None)
    for n in conv1d_names(model):
        new = sparse.get_submodule(n)
        assert isinstance(new, SparseLinear) and new.layout == layout
        assert sparse.sparsekern_report[n][0] == layout
        assert torch.equal(new.to_dense().weight, model.get_submodule(n).weight.detach().t())
    assert _rel(hidden(sparse, x), ref) < 1e-5


def test_prune_convert_on_gpt2_with_masks():
    model = tiny_gpt2()
    dense = copy.deepcopy(model)
    masks = prune.prune_model(model, 0.75, "fine", apply=False)
    ref = hidden(prune.apply_masks(copy.deepcopy(dense), masks), ids())
    sparse = prune.convert(dense, "csc", masks=masks, max_density=1.0)
    assert all(isinstance(sparse.get_submodule(n), SparseLinear) for n in conv1d_names(model))
    assert _rel(hidden(sparse, ids()), ref) < 1e-5


def test_auto_layout_on_gpt2_feeds_the_chooser_the_out_in_matrix():
    model = tiny_gpt2()
    names = conv1d_names(model)
    prune.prune_model(model, granularity="2:4", layers=names)
    # Every format beats dense in this table, so the decision follows the weight's pattern:
    # 2:4 is eligible only if the chooser sees the [out, in] matrix (the [in, out] weight
    # of a Conv1D is not 2:4 along its rows).
    table = synthetic_table({n: (1.0, {"2:4": [(0.5, 0.2)], "csc": [(0.05, 0.1), (0.6, 0.9)]})
                             for n in names})
    x = ids()
    ref = hidden(model, x)
    sparse = sk.sparsify(copy.deepcopy(model), "auto", latency_table=table, layers=names)
    for n in names:
        assert sparse.sparsekern_decisions[n].format == "2:4", sparse.sparsekern_report[n]
        assert isinstance(sparse.get_submodule(n), SparseLinear)
    assert _rel(hidden(sparse, x), ref) < 1e-5


def test_latency_signatures_of_conv1d_are_those_of_the_equivalent_linear():
    from sparsekern.auto.signature import capture, signature_of
    model = tiny_gpt2()
    sigs = capture(model, ids(batch=1, seq=4))
    for n in conv1d_names(model):
        m = model.get_submodule(n)
        lin = nn.Linear(*reversed(_layers.dims(m)))
        assert sigs[n].kind == "linear" and sigs[n].matrix_shape == _layers.dims(m)
        assert sigs[n].input_shape == (1, 4, m.weight.shape[0])
        shape = (1, 4, lin.in_features)
        assert signature_of(m, shape) == signature_of(lin, shape)


def test_sparsified_bert_matches_the_masked_dense_model():
    model = tiny_bert()
    prune.prune_model(model, granularity="2:4",
                      layers=[n for n, m in model.named_modules() if type(m) is nn.Linear])
    x = ids()
    ref = hidden(model, x)
    sparse = sk.sparsify(copy.deepcopy(model), "2:4")
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == 2 * 6 + 1
    assert _rel(hidden(sparse, x), ref) < 1e-5


# -- what sparsify leaves alone, and why ---------------------------------------------------------

def test_layers_left_alone_are_reported_and_logged(caplog):
    model = nn.Sequential(nn.Linear(8, 8), nn.Conv1d(8, 8, 1), nn.Conv2d(4, 4, 1, groups=2))
    model.attn = nn.MultiheadAttention(8, 2)  # out_proj: an nn.Linear subclass read directly
    with caplog.at_level(logging.INFO, logger="sparsekern"), warnings.catch_warnings():
        # it has a layer to pack: no "nothing to pack" warning, only the one that its one
        # packable layer does not fit the explicit layout
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=r"sparsify: layout='2:4' packed none")
        sk.sparsify(model, "2:4")
    r = model.sparsekern_report
    assert r["0"] == ("dense", "weight is not 2:4 sparse")
    assert r["1"] == ("dense", "Conv1d is not supported (only nn.Conv2d and transformers Conv1D)")
    assert r["2"] == ("dense", "grouped Conv2d (groups=2) is kept dense")
    assert r["attn.out_proj"] == ("dense", "NonDynamicallyQuantizableLinear subclasses nn.Linear; "
                                           "only nn.Linear itself is swapped (a subclass may "
                                           "change forward, or its parent may read .weight "
                                           "directly)")
    logged = caplog.text
    for name in ("0", "1", "2", "attn.out_proj"):
        assert f"sparsify: {name} stays dense" in logged


def test_a_model_with_nothing_to_pack_gets_a_warning_naming_its_layer_types():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.LayerNorm(4), nn.ReLU(),
                          nn.Conv1d(4, 4, 1))
    with pytest.warns(UserWarning, match=r"sparsify: Sequential has no layer that sparsekern can "
                                         r"pack \(nn\.Linear, nn\.Conv2d \(groups=1\) or "
                                         r"transformers Conv1D\); its layers are: Embedding, "
                                         r"LayerNorm x2, Conv1d"):
        sk.sparsify(model, "2:4")
    assert model.sparsekern_report == {"4": ("dense", "Conv1d is not supported (only nn.Conv2d "
                                                      "and transformers Conv1D)")}


def test_prune_reports_the_layer_types_of_a_model_with_nothing_to_prune():
    with pytest.raises(ValueError, match=r"has no prunable layers: expected at least one "
                                         r"nn\.Linear or nn\.Conv2d \(or a transformers Conv1D\); "
                                         r"its layers are: Embedding, LayerNorm"):
        prune.prune_model(nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)), 0.5)


def test_sparsify_rejects_unknown_layer_names():
    with pytest.raises(ValueError, match=r"layers: 'x' does not exist in Sequential; expected "
                                         r"the name of an nn\.Linear"):
        sk.sparsify(nn.Sequential(nn.Linear(4, 4)), "2:4", layers=["x"])
    with pytest.raises(ValueError, match=r"layers: '1' is a ReLU in Sequential"):
        sk.sparsify(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "2:4", layers=["1"])


# -- save / load ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_gpt2_save_load_round_trip(tmp_path, suffix):
    model = tiny_gpt2()
    prune.prune_model(model, 0.8, "fine", layers=conv1d_names(model))
    sparse = sk.sparsify(model, "csc", max_density=1.0)
    path = tmp_path / f"gpt2{suffix}"
    sk.save_sparse(sparse, path)
    fresh = sk.load_sparse(tiny_gpt2(seed=5), path)
    assert all(isinstance(fresh.get_submodule(n), SparseLinear)
               for n in conv1d_names(tiny_gpt2()))
    x = ids()
    assert torch.equal(hidden(fresh, x), hidden(sparse, x))


# -- transformers stays unloaded when the model does not use it -----------------------------

def test_transformers_is_not_imported_for_a_plain_torch_model(tmp_path):
    code = textwrap.dedent(f"""
        import sys, torch
        from torch import nn
        import sparsekern as sk
        from sparsekern import prune
        m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        prune.prune_model(m, granularity="2:4")
        s = prune.convert(m, "2:4")
        sk.sparsify(nn.Sequential(nn.Linear(8, 8)), "csc", max_density=1.0)
        for p in ({str(tmp_path / 'm.pt')!r}, {str(tmp_path / 'm.safetensors')!r}):
            sk.save_sparse(s, p)
            sk.load_sparse(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), p)
        assert "transformers" not in sys.modules, "transformers was imported"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_an_explicit_layout_that_fits_no_layer_warns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))   # dense weights
    with pytest.warns(UserWarning, match=r"sparsify: layout='2:4' packed none of the 2 layers: "
                                         r"0: .*\(and 1 more\); prune to the '2:4' pattern first "
                                         r"\(sparsekern.prune\), or use layout='auto'"):
        sk.sparsify(model, "2:4")
    assert all(c == "dense" for c, _ in model.sparsekern_report.values())
    half = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        half[0].weight.view(8, 2, 4)[:, :, :2] = 0        # layer 0 is 2:4, layer 2 is not
    import warnings as _w
    with _w.catch_warnings():
        _w.simplefilter("error")                            # a partial fit is not a mistake
        sk.sparsify(half, "2:4")
    assert half.sparsekern_report["0"][0] == "2:4" and half.sparsekern_report["2"][0] == "dense"


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
def test_sequential_calibration_on_gpt2_with_a_kv_cache_and_padding(criterion, monkeypatch):
    """GPT-2's config has use_cache=True: each block got the model's DynamicCache, and the
    sequential fast path replayed blocks with it, appending keys on every replay (a padded
    batch then raised a shape error). Calibration now runs without a cache; the masks are
    those of the model re-run from its input (no replay) and of use_cache=False."""
    x = ids(batch=3, seq=10)
    mask = torch.ones_like(x)
    mask[0, 6:] = 0
    mask[2, 3:] = 0
    calib = [{"input_ids": x, "attention_mask": mask}]

    def run(use_cache, replay=True):
        model = tiny_gpt2()
        model.config.use_cache = use_cache
        if not replay:
            monkeypatch.setattr(sequential, "find_chain", lambda *a, **k: None)
        masks = prune.prune_model(model, 0.5, "fine", criterion, calib=calib)
        monkeypatch.undo()
        assert model.config.use_cache is use_cache  # restored
        return masks, model

    masks, model = run(True)
    for other_masks, other in (run(False), run(True, replay=False)):
        assert masks.keys() == other_masks.keys()
        for n in masks:
            assert torch.equal(masks[n], other_masks[n]), n
            assert torch.equal(model.get_submodule(n).weight, other.get_submodule(n).weight), n


def test_distill_a_sparsified_gpt2_whose_only_dense_linear_is_the_tied_head():
    """masks=None holds the zeros of the layers pruning would pick by default; the tied
    lm_head is not one of them, so a model with nothing else dense holds nothing there (it
    raised 'has no prunable layers', naming the Linear it had)."""
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    teacher = copy.deepcopy(model)
    prune.prune_model(model, granularity="2:4")
    sparse = sk.sparsify(model, layout="2:4")
    assert isinstance(sparse.lm_head, nn.Linear)
    before = sparse.transformer.wte.weight.detach().clone()
    losses = prune.distill(sparse, teacher, [ids()], steps=2, lr=1e-3, progress=False)
    assert len(losses) == 2
    assert sparse.lm_head.weight is sparse.transformer.wte.weight  # still tied
    assert not torch.equal(before, sparse.transformer.wte.weight)  # and trained


def test_distill_on_batches_with_labels_matches_the_logits_not_the_loss():
    """A language-modelling batch carries labels, so the model's output starts with its
    scalar loss: distill took that as the output and matched the student's loss to the
    teacher's (MSE of two numbers), silently; the logits are the output, as without labels."""
    teacher = tiny_gpt2_lm()
    model = copy.deepcopy(teacher)
    prune.prune_model(model, 0.7)
    batches = [{"input_ids": ids(seed=s), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
               for s in (1, 2)]
    labelled = [dict(b, labels=b["input_ids"]) for b in batches]
    assert list(model(**labelled[0]).keys())[0] == "loss"
    runs = []
    for data in (batches, labelled):
        student = copy.deepcopy(model)
        losses = prune.distill(student, teacher, data, steps=2, lr=1e-3, progress=False)
        runs.append((losses, student))
    assert runs[0][0] == runs[1][0]
    fresh = ids(seed=9)
    torch.testing.assert_close(runs[1][1](fresh).logits, runs[0][1](fresh).logits,
                               rtol=0, atol=0)
    out = model(**labelled[0])
    assert sk.inputs.output_tensor(out) is out.logits
    assert sk.inputs.output_tensor({"loss": out.loss}) is out.loss  # nothing else: the loss


def test_calibration_statistics_count_real_tokens_only():
    """A tokenizer's padded batch: the tokens its attention_mask marks 0 are padding, whose
    activations depend on the pad token id. Wanda's input norms (and SparseGPT's Hessian,
    through the same rows) must be those of the real tokens: equal to running each sequence
    unpadded, and blind to the pad token id."""
    from sparsekern.prune import criteria
    a, b = ids(batch=1, seq=10, seed=3), ids(batch=1, seq=6, seed=4)
    padded = torch.zeros(2, 10, dtype=torch.long)
    padded[0], padded[1, :6] = a[0], b[0]
    mask = torch.zeros(2, 10, dtype=torch.long)
    mask[0], mask[1, :6] = 1, 1
    model = tiny_gpt2()
    mods = {n: model.get_submodule(n) for n in conv1d_names(model)}
    got = criteria.input_column_norms(model, mods, [{"input_ids": padded, "attention_mask": mask}])
    want = criteria.input_column_norms(model, mods, [{"input_ids": a}, {"input_ids": b}])
    for n in mods:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-6)
    other = padded.clone()
    other[1, 6:] = 7  # another pad token id
    for criterion in ("wanda", "sparsegpt"):
        m1, m2 = tiny_gpt2(), tiny_gpt2()
        k1 = prune.prune_model(m1, 0.5, "fine", criterion,
                               calib={"input_ids": padded, "attention_mask": mask})
        k2 = prune.prune_model(m2, 0.5, "fine", criterion,
                               calib={"input_ids": other, "attention_mask": mask})
        for n in k1:
            assert torch.equal(k1[n], k2[n]), (criterion, n)
            assert torch.equal(m1.get_submodule(n).weight, m2.get_submodule(n).weight)


# -- Hugging Face save_pretrained of a sparsified model ---------------------------------------

def tiny_gpt2_lm(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("layout", ["2:4", "csc", "bsr"])
def test_save_pretrained_of_a_sparsified_bert_loads_back_with_load_sparse(tmp_path, layout):
    # Its state_dict holds tensors only (a layer's extra state is the uint8 JSON of its
    # layout and shape), so save_pretrained writes it; load_sparse reads the folder or file.
    model = tiny_bert()
    gran = {"2:4": "2:4", "csc": "fine", "bsr": (8, 8)}[layout]
    prune.prune_model(model, 0.75 if layout != "2:4" else 0.5, gran)
    sparse = sk.sparsify(model, layout, blocksize=(8, 8) if layout == "bsr" else None,
                         max_density=1.0)
    extra = sparse.encoder.layer[0].intermediate.dense.state_dict()["_extra_state"]
    assert extra.dtype == torch.uint8 and extra.dim() == 1
    sparse.save_pretrained(tmp_path)
    x = ids()
    for path in (tmp_path, tmp_path / "model.safetensors"):
        fresh = sk.load_sparse(tiny_bert(seed=7), path)
        assert isinstance(fresh.encoder.layer[1].output.dense, SparseLinear)
        assert fresh.encoder.layer[1].output.dense.layout == sparse.encoder.layer[1].output.dense.layout
        assert torch.equal(fresh(input_ids=x).last_hidden_state,
                           sparse(input_ids=x).last_hidden_state)


def test_save_pretrained_of_a_sparsified_gpt2_lm_fills_the_tied_head_and_reads_shards(tmp_path):
    model = tiny_gpt2_lm()
    prune.prune_model(model, granularity="2:4", layers=conv1d_names(model))
    sparse = sk.sparsify(model, layout="2:4", layers=conv1d_names(model))
    # save_pretrained stores the tied lm_head once (under the embedding) and, with a small
    # shard size, splits the file into shards named by an index.
    sparse.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    fresh = sk.load_sparse(tiny_gpt2_lm(seed=3), tmp_path)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still tied
    x = ids()
    assert torch.equal(fresh(input_ids=x).logits, sparse(input_ids=x).logits)


def test_a_state_dict_file_with_a_bad_layer_is_rejected_and_changes_nothing(tmp_path):
    from safetensors.torch import load_file, save_file
    model = tiny_bert()
    prune.prune_model(model, 0.5, "2:4")
    sk.sparsify(model, "2:4").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = "encoder.layer.0.intermediate.dense"
    fresh = tiny_bert(seed=7)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}

    def rejected(tensors, match):
        path = tmp_path / "bad.safetensors"
        save_file(tensors, path)
        with pytest.raises(ValueError, match=match):
            sk.load_sparse(fresh, path)
        assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())

    rejected({k: v for k, v in state.items() if k != key + ".indices"},
             rf"layer '{key}' has no tensor '{key}\.indices'")
    rejected(dict(state, **{key + "._extra_state": torch.tensor([1, 2, 3], dtype=torch.uint8)}),
             rf"'{key}\._extra_state': extra state: a uint8 tensor of 3 bytes that is not the "
             r"UTF-8 JSON of an object")
    rejected(dict(state, **{key + "._extra_state": torch.zeros(3)}),
             r"extra state must be a dict or a uint8 \[n\] tensor of its JSON, got a "
             r"torch.float32 tensor of shape \[3\]")
    rejected({k: v for k, v in state.items() if "_extra_state" not in k},
             r"state does not match the model: missing \[.*'encoder\.layer\.0\.intermediate\."
             r"dense\.weight'.*unexpected \[.*'encoder\.layer\.0\.intermediate\.dense\.values'")
    bad = dict(state)
    bad[key + ".values"] = bad[key + ".values"][:-1].clone()
    rejected(bad, rf"layer '{key}'")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"is a folder without model\.safetensors, "
                                         r"pytorch_model\.bin or their index"):
        sk.load_sparse(fresh, tmp_path / "empty")


@pytest.mark.parametrize("how", ["torch.save", "bin", "bin-shards"])
def test_load_sparse_reads_a_plain_torch_state_dict_and_a_bin_folder(tmp_path, how):
    model = tiny_gpt2_lm()
    prune.prune_model(model, 0.7, "fine", layers=conv1d_names(model))
    sparse = sk.sparsify(model, layout="csc", layers=conv1d_names(model))
    if how == "torch.save":
        path = tmp_path / "state.pt"
        torch.save(sparse.state_dict(), path)
    else:  # the folder layout of transformers 4's save_pretrained(safe_serialization=False)
        path, state = tmp_path, sparse.state_dict()
        if how == "bin":
            torch.save(state, tmp_path / "pytorch_model.bin")
        else:
            keys = sorted(state)
            shards = {"pytorch_model-00001-of-00002.bin": keys[::2],
                      "pytorch_model-00002-of-00002.bin": keys[1::2]}
            for name, part in shards.items():
                torch.save({k: state[k] for k in part}, tmp_path / name)
            index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items()
                                                    for k in part}}
            (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    fresh = sk.load_sparse(tiny_gpt2_lm(seed=9), path)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    x = ids()
    assert torch.equal(fresh(input_ids=x).logits, sparse(input_ids=x).logits)


def test_a_checkpoint_with_no_packed_layer_loads_as_the_dense_state(tmp_path):
    """sparsify(layout="auto") may leave every layer dense (it depends on the machine): its
    save_pretrained folder, or any plain state_dict of the same model, loads like
    load_state_dict; a file that is no state_dict is named."""
    model = tiny_bert(seed=2)
    model.save_pretrained(tmp_path / "hf")
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    x = ids()
    for path in (tmp_path / "hf", tmp_path / "dense.pt"):
        fresh = sk.load_sparse(tiny_bert(seed=8), path)
        assert torch.equal(fresh(input_ids=x).last_hidden_state,
                           model(input_ids=x).last_hidden_state)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt is not a file written by "
                                         r"sparsekern\.save_sparse nor a state_dict"):
        sk.load_sparse(tiny_bert(), tmp_path / "list.pt")


@pytest.mark.parametrize("arch", ["gpt_neox", "vit"])
def test_save_pretrained_under_legacy_key_names_loads_back(tmp_path, arch):
    # transformers 5 writes some keys under their legacy checkpoint names (GPT-NeoX's lm_head
    # as embed_out, ViT's q_proj as attention.attention.query); load_sparse renames them back
    # as from_pretrained does (renamings only).
    import importlib.util
    if importlib.util.find_spec("transformers.conversion_mapping") is None:
        pytest.skip("this transformers has no conversion mappings (keys are saved as named)")
    if arch == "gpt_neox":
        cfg = transformers.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=32)
        cls, inp = transformers.GPTNeoXForCausalLM, {"input_ids": ids()}
    else:
        cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, image_size=16, patch_size=8)
        cls = transformers.ViTModel
        inp = {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}

    def fresh(seed):
        torch.manual_seed(seed)
        return cls(cfg).eval()
    model = fresh(0)
    prune.prune_model(model, 0.5, "2:4")
    sparse = sk.sparsify(model, layout="2:4")
    sparse.save_pretrained(tmp_path)
    loaded = sk.load_sparse(fresh(4), tmp_path)
    out = (lambda m: m(**inp)[0])
    assert torch.equal(out(loaded), out(sparse))
    assert {n for n, m in loaded.named_modules() if isinstance(m, SparseLinear)} == \
        {n for n, m in sparse.named_modules() if isinstance(m, SparseLinear)}


def test_calibration_skips_padding_of_layers_that_see_flattened_tokens():
    """OPT flattens its hidden states to [batch * seq, K] before fc1/fc2: their padding rows
    are left out too (they were counted, and the padded batch gave other masks than the same
    sequences one by one)."""
    from sparsekern.prune import criteria
    cfg = transformers.OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                 num_attention_heads=2, max_position_embeddings=32,
                                 word_embed_proj_dim=32, pad_token_id=1, dropout=0.0)
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(cfg).eval()
    seqs = [ids(batch=1, seq=n, seed=s)[0].clamp_min(3) for n, s in ((12, 1), (7, 2), (4, 3))]
    padded = torch.full((3, 12), 1)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, s in enumerate(seqs):
        padded[i, :len(s)], mask[i, :len(s)] = s, 1
    mods = {n: m for n, m in model.named_modules() if type(m) is nn.Linear and n != "lm_head"}
    assert any(n.endswith("fc1") for n in mods) and any(n.endswith("fc2") for n in mods)
    got = criteria.input_column_norms(model, mods,
                                      [{"input_ids": padded, "attention_mask": mask}])
    want = criteria.input_column_norms(model, mods, [{"input_ids": s[None]} for s in seqs])
    for n in mods:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5, msg=n)


def test_moving_2_4_masks_on_gpt2_conv1d_run_along_the_input_dim():
    """MaskUpdate (SR-STE) on transformers' Conv1D, which stores [in, out]: the 2:4 groups
    run along the input dim, as pruning and sparsify have them (it refused the masks as
    'not 2:4' and would have re-picked them along the output dim)."""
    teacher = tiny_gpt2_lm()
    model = copy.deepcopy(teacher)
    names = conv1d_names(model)
    masks = prune.prune_model(model, granularity="2:4", layers=names)
    data = [{"input_ids": ids(batch=2, seq=8, seed=s)} for s in range(2)]
    # freeze=0.25 of 8 steps: the masks are re-picked at steps 1-5, on the parametrized
    # module (its class is parametrize's ParametrizedConv1D, still a Conv1D).
    upd = prune.MaskUpdate(decay=0.0, every=1, freeze=0.25)
    assert upd.moving_steps(8) > 2
    prune.distill(model, teacher, data, masks=masks, steps=8, lr=1e-2, progress=False,
                  mask_update=upd)
    # Every step re-picked the masks (every=1) before they froze: picked along the wrong dim,
    # they would not be 2:4 along the input dim.
    for n in names:
        W = _layers.weight_matrix(model.get_submodule(n))  # [out, in]
        assert ((W != 0).reshape(W.shape[0], -1, 4).sum(-1) <= 2).all(), n
    sparse = sk.sparsify(model, layout="2:4", layers=names)
    assert all(isinstance(sparse.get_submodule(n), SparseLinear) for n in names)


def test_a_sparsified_model_reports_its_sparsity_and_refuses_masks_for_packed_layers():
    teacher = tiny_bert()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, 0.5, "2:4")
    before = prune.sparsity(model)
    sparse = sk.sparsify(copy.deepcopy(model), "2:4")
    assert prune.sparsity(sparse) == before  # packed layers count (it said 'no prunable layers')
    some = next(iter(masks))
    assert prune.sparsity(sparse, layers=[some]) == {some: before[some], "total": before[some]}
    # one name as a plain str (it was read character by character: "layer 'e' does not exist")
    assert prune.sparsity(sparse, layers=some) == {some: before[some], "total": before[some]}
    assert prune.sparsity(model, layers=some) == {some: before[some], "total": before[some]}
    with pytest.raises(ValueError, match=rf"mask for layer '{some}': got a mask for a packed "
                                         r"SparseLinear \(sparsekern\.sparsify, layout '2:4'\); "
                                         r"expected masks for dense layers only\. Layout '2:4' "
                                         r"can store zeros .*StoredZeroHolder"):
        prune.distill(sparse, teacher, [ids()], masks=masks, steps=1, progress=False)
    prune.distill(sparse, teacher, [ids()], steps=1, progress=False)  # masks=None: fine


def test_distill_compares_real_tokens_only():
    """A right-padded batch: a student equal to the teacher except at the pad token's
    embedding has the same outputs at every real token, so its loss is 0 (the padding
    positions' outputs, which differ, were part of it)."""
    teacher = tiny_gpt2()
    student = copy.deepcopy(teacher)
    pad = 5
    with torch.no_grad():
        student.wte.weight[pad].add_(torch.randn(32, generator=torch.Generator().manual_seed(0)))
    x = ids(batch=2, seq=8, seed=1)
    x[x == pad] = 6
    mask = torch.ones(2, 8, dtype=torch.long)
    x[1, 5:], mask[1, 5:] = pad, 0
    batch = {"input_ids": x, "attention_mask": mask}
    real = mask.bool()
    with torch.no_grad():
        a, b = student(**batch).last_hidden_state, teacher(**batch).last_hidden_state
    assert torch.equal(a[real], b[real]) and not torch.equal(a[~real], b[~real])
    for loss in ("mse", "cosine"):
        losses = prune.distill(copy.deepcopy(student), teacher, [batch], masks={}, steps=1,
                               loss=loss, progress=False)
        assert losses[0] < 1e-6, (loss, losses)  # cosine: 1 - cos(v, v) rounds to ~5e-8
        from sparsekern.prune.distill import distance
        assert distance(a, b, loss, "x") > 1e-3  # what the padding positions added before
    # Without padding the loss is the plain mean, as before.
    unpadded = {"input_ids": x[:1, :5], "attention_mask": mask[:1, :5]}
    with torch.no_grad():
        s, t = student(**unpadded).last_hidden_state, teacher(**unpadded).last_hidden_state
    from sparsekern.prune.distill import distance
    assert torch.equal(distance(s, t, "mse", "x", unpadded["attention_mask"]),
                       torch.nn.functional.mse_loss(s, t))


@pytest.mark.parametrize("criterion,sequential", [("wanda", False), ("wanda", True),
                                                  ("sparsegpt", True)])
def test_calibration_with_no_real_token_is_refused(criterion, sequential):
    """An all-zero (or inverted) attention_mask leaves every row out: Wanda's norms were all 0
    and its masks fell to tie order, SparseGPT became magnitude pruning, silently."""
    model = tiny_gpt2()
    x = ids(batch=2, seq=6)
    calib = [{"input_ids": x, "attention_mask": torch.zeros_like(x)}]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer 'h\.0\.attn\.c_attn' saw no real token in the "
                                         r"calibration data: every row of its inputs was padding"):
        prune.prune_model(model, 0.5, "2:4", criterion, calib=calib, sequential=sequential)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_count_macs_counts_gpt2_conv1d_layers():
    """Dense GPT-2 counted only its lm_head (Conv1D was not hooked), so the sparsified model
    showed more MACs than the dense one."""
    from sparsekern.prune import stats
    model = tiny_gpt2_lm()
    x = {"input_ids": ids(batch=1, seq=8)}
    dense = stats.count_macs(model, x)
    names = conv1d_names(model)
    assert set(names) <= set(dense)
    c_fc = model.get_submodule(names[0])
    assert dense[names[0]] == 8 * c_fc.weight.numel()
    prune.prune_model(model, granularity="2:4", layers=names)
    sparse = stats.count_macs(sk.sparsify(copy.deepcopy(model), "2:4", layers=names), x)
    assert sparse["total"] < dense["total"]
    assert sparse[names[0]] == stats.count_macs(model, x, nonzero=True)[names[0]]


def test_train_fine_tune_and_accuracy_take_tokenizer_batches_and_model_outputs():
    """(tokenizer-dict, labels) batches, as prune_model's calibration takes them, and a
    classifier returning a SequenceClassifierOutput (it passed the dict positionally and
    called argmax on the output object)."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    x = ids(batch=4, seq=6)
    data = [({"input_ids": x, "attention_mask": torch.ones_like(x)}, torch.tensor([0, 1, 2, 1]))]
    masks = prune.prune_model(model, 0.5, "2:4", calib=data)
    acc0 = prune.accuracy(model, data)
    losses = prune.fine_tune(model, data * 4, epochs=3, lr=1e-2, masks=masks, progress=False)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert 0.0 <= acc0 <= 1.0 and prune.accuracy(model, data) >= acc0
    for n, m in masks.items():  # the pruned weights stayed zero
        assert not model.get_submodule(n).weight[~m].any(), n
    assert prune.accuracy(model, [(x, torch.tensor([0, 1, 2, 1]))]) >= 0.0  # a plain tensor too


def test_the_demo_reads_a_hugging_face_model_output():
    """demo.run on a transformers model: its outputs are ModelOutputs (it reshaped the
    object and crashed before doing anything)."""
    from sparsekern.demo import tasks
    model = tiny_bert()
    data = [{"input_ids": ids(batch=3, seq=5, seed=s)} for s in range(2)]
    out = tasks.outputs(model, data)
    # A token-shaped output [B, T, H] is one mean-pooled vector per sample (no attention
    # mask here: every token counts).
    assert out.shape == (6, 32) and out.dtype == torch.float32
    want = model(**data[0]).last_hidden_state.mean(1)
    torch.testing.assert_close(out[:3], want)


def test_a_layout_that_packs_nothing_is_said_once():
    """The warning is what a user sees: without a logging setup, logging's last-resort
    handler printed the WARNING record of the same text a second time (both cases)."""
    code = ("import warnings, torch, sparsekern as sk\n"
            "warnings.simplefilter('always')\n"
            "sk.sparsify(torch.nn.Sequential(torch.nn.Linear(8, 8)), layout='2:4')\n"
            "sk.sparsify(torch.nn.Sequential(torch.nn.ReLU()), layout='2:4')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("packed none of the 1 layers") == 1, out.stderr
    assert out.stderr.count("has no layer that sparsekern can pack") == 1, out.stderr
