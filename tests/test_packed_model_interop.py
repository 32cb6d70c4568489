"""A new user's trial (F): packed layers left out of prune_model, FX tracing, code written for a
dense layer's weight (transformers' resize_token_embeddings and tie_weights), torch.ao
quantized layers, a module under two names, sparsify(layers=) over packed layers."""
import copy
import logging
import warnings

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10)).eval()


def _sparse_mlp(layers=None):
    m = _mlp()
    prune.prune_model(m, granularity="2:4", criterion="l1", layers=layers)
    return sk.sparsify(m, layout="2:4", layers=layers)


class _Alias(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.b = self.a  # one module, two names
        self.out = nn.Linear(64, 8)

    def forward(self, x):
        return self.out(self.b(torch.relu(self.a(x))))


def test_prune_model_logs_the_packed_layers_it_leaves_out(caplog):
    """prune_model(model, 0.9) on a partly sparsified model left the packed layers at their
    old sparsity without a word, while tied and subclassed layers left out were logged."""
    m = _mlp()
    prune.prune_model(m, 0.5, granularity="fine", criterion="l1")
    s = sk.sparsify(m, layout="csc", max_density=0.6, layers=["0"])
    with caplog.at_level(logging.INFO, logger="sparsekern.prune"):
        masks = prune.prune_model(s, 0.9, granularity="fine", criterion="l1")
    assert list(masks) == ["2", "4"]
    lines = [r.getMessage() for r in caplog.records if r.name == "sparsekern.prune"]
    assert any(line.startswith("0 left out: it is a SparseLinear (layout 'csc') packed by "
                               "sparsekern.sparsify: prune the dense model before sparsify, "
                               "or unpack a layer with layer.to_dense()") for line in lines), lines


def test_fx_symbolic_trace_names_fx_and_the_ways_around_it():
    s = _sparse_mlp()
    with pytest.raises(TypeError, match=r"x is a torch\.fx Proxy: torch\.fx\.symbolic_trace "
                                        r"\(and FX graph-mode quantization, prepare_fx\) cannot "
                                        r"trace through a sparsekern layer .*torch\.export\.export "
                                        r"and torch\.compile trace it.*set_non_traceable_module_"
                                        r"classes\(\[sparsekern\.SparseLinear, "
                                        r"sparsekern\.SparseConv2d\]\).*is_leaf_module"):
        torch.fx.symbolic_trace(s)
    # A model whose only sparse layer is a conv: the same refusal, not torch's TraceError.
    conv = sk.sparsify(nn.Sequential(nn.Conv2d(4, 8, 3)), layout="csc", max_density=1.0)
    assert isinstance(conv[0], sk.SparseConv2d)
    with pytest.raises(TypeError, match=r"x is a torch\.fx Proxy: .*SparseConv2d"):
        torch.fx.symbolic_trace(conv)

    class Leaves(torch.fx.Tracer):  # the way around it that the message gives
        def is_leaf_module(self, mod, qualname):
            return isinstance(mod, sk.SparseLinear) or super().is_leaf_module(mod, qualname)

    traced = torch.fx.GraphModule(s, Leaves().trace(s))
    x = torch.randn(3, 64)
    assert torch.equal(traced(x), s(x))


def test_a_tensor_attribute_of_a_packed_weight_says_it_is_a_format():
    """transformers' resize_token_embeddings read lm_head.weight.size() and got
    "'Semi24' object has no attribute 'size'"."""
    layer = _sparse_mlp()[0]
    w = layer.weight
    with pytest.raises(AttributeError, match=r"'Semi24' object has no attribute 'size': it is a "
                                             r"sparsekern Semi24 \(layout '2:4' of shape "
                                             r"\(128, 64\)\), a packed sparse matrix, not a "
                                             r"torch\.Tensor; .*weight is packed in a sparsekern "
                                             r"format\. Get a dense tensor with "
                                             r"\.weight\.to_dense\(\)"):
        w.size()
    assert not hasattr(w, "size") and not hasattr(w, "data")  # still an AttributeError
    assert getattr(w, "grad_fn", "none") == "none"
    with pytest.raises(AttributeError, match=r"^'Semi24' object has no attribute 'nonsense'$"):
        w.nonsense
    assert copy.deepcopy(w).shape == w.shape  # dunder look-ups unaffected
    assert torch.equal(w.to_dense(), layer.to_dense().weight)


def test_assigning_a_packed_layers_weight_says_a_tied_layer_stays_dense():
    """transformers' tie_weights() onto a packed lm_head: KeyError "attribute 'weight'
    already exists" (nn.Module.register_parameter)."""
    layer = _sparse_mlp()[0]
    msg = (r"SparseLinear\.weight cannot be assigned \(got a Parameter of shape \[128, 64\]\): "
           r"it is the layer's packed sparse weight .*a tied layer must stay dense, and "
           r"sparsekern\.sparsify leaves tied layers dense")
    with pytest.raises(AttributeError, match=msg):
        layer.weight = nn.Parameter(torch.zeros(128, 64))
    with pytest.raises(AttributeError, match=r"got a Tensor of shape \[128, 64\]"):
        layer.weight = torch.zeros(128, 64)
    assert isinstance(layer.weight, sk.formats.SparseFormat)
    layer.bias = nn.Parameter(torch.ones(128))  # other attributes as before
    assert torch.equal(layer.bias, torch.ones(128))


def test_hf_tie_weights_and_resize_token_embeddings_on_a_packed_lm_head():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    m.lm_head.weight = nn.Parameter(m.transformer.wte.weight.detach().clone())  # untied
    prune.prune_model(m, granularity="2:4", criterion="l1", layers=["lm_head"])
    sp = sk.sparsify(m, layout="2:4", layers=["lm_head"])
    assert isinstance(sp.lm_head, sk.SparseLinear)
    with pytest.raises(AttributeError, match=r"SparseLinear\.weight cannot be assigned \(got a "
                                             r"Parameter of shape \[64, 32\]\).*tie_weights"):
        sp.tie_weights()
    with pytest.raises(AttributeError, match=r"object has no attribute 'size': it is a sparsekern "
                                             r"Semi24"):
        sp.resize_token_embeddings(80)


def _quantized(model):
    from torch.ao.quantization import quantize_dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def test_quantized_layers_are_named_as_not_supported(tmp_path):
    q = _quantized(_mlp())
    note = (r"its layers are: DynamicQuantizedLinear x3 \(quantized by torch\.ao\.quantization; "
            r"quantized layers are not supported: sparsekern prunes and packs float layers "
            r"only")
    with pytest.warns(UserWarning, match=r"sparsify: Sequential has no layer that sparsekern can "
                                         r"pack .*; " + note):
        out = sk.sparsify(q, layout="2:4")
    assert out.sparsekern_report["0"][0] == "dense"
    assert "DynamicQuantizedLinear is quantized" in out.sparsekern_report["0"][1]
    with pytest.raises(ValueError, match=r"model Sequential has no prunable layers: .*" + note):
        prune.prune_model(_quantized(_mlp()), 0.5, granularity="fine", criterion="l1")
    with pytest.raises(ValueError, match=r"layers: '0' is a DynamicQuantizedLinear \(quantized"):
        sk.sparsify(_quantized(_mlp()), layout="2:4", layers=["0"])
    with pytest.raises(ValueError, match=r"layer '0' is a DynamicQuantizedLinear \(quantized by "
                                         r"torch\.ao\.quantization; .*\); only nn\.Linear"):
        prune.prune_model(_quantized(_mlp()), 0.5, layers=["0"], granularity="fine",
                          criterion="l1")
    # load_sparse: "the saved sparse layer '0' is a Linear, but the model has a Linear there"
    s = _sparse_mlp(layers=["0", "2"])
    sk.save_sparse(s, tmp_path / "s.pt")
    with pytest.raises(ValueError, match=r"the saved sparse layer '0' is a torch\.nn\.Linear, but "
                                         r"the model has a torch\.ao\.nn\.quantized\.dynamic\."
                                         r"modules\.linear\.Linear there \(a "
                                         r"DynamicQuantizedLinear, quantized by torch\.ao\."
                                         r"quantization.*\); expected an nn\.Linear, a "
                                         r"transformers Conv1D or a SparseLinear"):
        sk.load_sparse(_quantized(_mlp(seed=3)), tmp_path / "s.pt")


def test_a_second_name_of_a_module_is_that_module(caplog):
    """m.b = m.a: prune_model({'b': r}) and sparsify(layers=['b']) said "'b' does not exist"
    (named_modules() gives the module once, as 'a'). 'b' is now 'a': pruned once, as 'a'."""
    torch.manual_seed(0)
    m = _Alias()
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        masks = prune.prune_model(m, {"b": 0.5}, granularity="fine", criterion="l1")
    assert list(masks) == ["a"]
    assert abs(prune.sparsity(m)["a"] - 0.5) < 1e-3
    assert any(r.getMessage() == "layer 'b' is another name for 'a' (one module registered "
                                 "under both names); pruned once, as 'a'" for r in caplog.records)
    masks = prune.prune_model(m, 0.7, granularity="fine", criterion="l1", layers=["a", "b"])
    assert list(masks) == ["a"]
    with pytest.raises(ValueError, match=r"ratio gives 'a' 0\.5 and 'b' 0\.7, but they are one "
                                         r"module registered under both names"):
        prune.prune_model(m, {"a": 0.5, "b": 0.7}, granularity="fine", criterion="l1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        s = sk.sparsify(m, layout="csc", layers=["b"])
    assert list(s.sparsekern_report) == ["a"]  # the same decision as for 'a': shared, dense
    assert s.sparsekern_report["a"][0] == "dense"
    assert "several names ('a', 'b')" in s.sparsekern_report["a"][1]
    assert any("'b' is another name for 'a'" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r"layers: 'c' does not exist in _Alias"):
        sk.sparsify(m, layout="csc", layers=["c"])


def test_sparsify_layers_over_an_already_packed_layer_reports_it(caplog):
    """sparsify(s, layers=['0', '2']) raised "'0' is a SparseLinear" when '0' was packed,
    while sparsify(s) reports it as already packed."""
    m = _mlp()
    prune.prune_model(m, granularity="2:4", criterion="l1")
    s = sk.sparsify(m, layout="2:4", layers=["0"])
    s = sk.sparsify(s, layout="2:4", layers=["0", "2"])
    assert s.sparsekern_report == {"0": ("2:4", "already packed"),
                                   "2": ("2:4", "weight is 2:4 sparse")}
    assert isinstance(s[2], sk.SparseLinear)
    # another layout: kept as it is, as sparsify(s) keeps it
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        s = sk.sparsify(s, layout="csc", max_density=1.0, layers=["0", "4"])
    assert s.sparsekern_report["0"] == ("2:4", "already packed")
    assert s.sparsekern_report["4"][0] == "csc" and s[0].layout == "2:4"
    assert any("0 stays 2:4 (already packed; layout='csc' applies to dense layers" in
               r.getMessage() for r in caplog.records)


def test_readme_onnx_recipe_unpacks_the_model_for_export(tmp_path):
    """torch.onnx.export fails on sparsekern::spmm (UnsupportedOperatorError); the README
    gives the way: export a copy with the layers unpacked to dense. Its recipe, run verbatim."""
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("ONNX has no", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    model = _sparse_mlp()
    ns = {"copy": copy, "sk": sk, "model": model}
    exec(compile("\n".join(line[2:] for line in code.splitlines()), "README", "exec"), ns)
    dense = ns["dense"]
    assert not any(isinstance(m, sk.SparseLinear) for m in dense.modules())
    assert isinstance(model[0], sk.SparseLinear)  # the model itself stays packed
    x = torch.randn(5, 64)
    torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    path = str(tmp_path / "dense.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(dense, (x,), path, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "B"}})
    y = ort.InferenceSession(path).run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-5)
