"""save_sparse / load_sparse in both file formats (.safetensors, .pt): round trips, every
rejection's message, and the model left untouched by a rejected file; load_state_dict of the
sparse layers validates before it changes anything."""
import json
import sys

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern._packed_module import decode_extra_state
from sparsekern.conv import SparseConv2d
from sparsekern.formats import layouts
from sparsekern.nn import SparseLinear

safetensors = pytest.importorskip("safetensors", reason="safetensors is not installed")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

SUFFIXES = [".safetensors", ".pt"]


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 5 * 5, 16), nn.ReLU(), nn.Linear(16, 8)).eval()


X = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(3))


def sparse_net(layout):
    model = net()
    if layout == "2:4":
        prune.prune_model(model, granularity="2:4")
    else:
        prune.prune_model(model, 0.8, "fine")
    return sk.sparsify(model, layout, max_density=None if layout == "2:4" else 1.0)


def snapshot(model):
    return ([type(m) for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)})


def assert_untouched(model, before):
    types, state = snapshot(model)
    assert types == before[0]
    assert state.keys() == before[1].keys()
    assert all(torch.equal(state[k], before[1][k]) for k in state)


# -- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", layouts.names())
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_into_a_fresh_model(tmp_path, layout, suffix):
    model = net()
    nm = layouts.get(layout).group is not None  # an N:M layout: pruned to its own N:M
    prune.prune_model(model, *((None, layout) if nm else
                               (0.75, (4, 4)) if layout == "bsr" else (0.8, "fine")))
    sparse = sk.sparsify(model, layout, blocksize=(4, 4) if layout == "bsr" else None,
                         max_density=None if nm else 1.0)
    assert [type(sparse[i]) for i in (0, 3, 5)] == [SparseConv2d, SparseLinear, SparseLinear]
    path = tmp_path / f"m{suffix}"
    sk.save_sparse(sparse, path)
    fresh = sk.load_sparse(net(seed=7), path)
    assert [type(fresh[i]) for i in (0, 3, 5)] == [SparseConv2d, SparseLinear, SparseLinear]
    with torch.no_grad():
        assert torch.equal(fresh(X), sparse(X))



@pytest.mark.parametrize("suffix", SUFFIXES)
def test_saving_into_a_missing_folder_names_the_path(tmp_path, suffix):
    sparse = sk.sparsify(net(), "csc", max_density=1.0)
    path = tmp_path / "no-such-folder" / f"m{suffix}"
    with pytest.raises(FileNotFoundError, match=r"save_sparse: path '.*no-such-folder/m\.[a-z]+' "
                                                r"is in the folder '.*no-such-folder', which "
                                                r"does not exist"):
        sk.save_sparse(sparse, path)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("below, why", [
    ("", r"is in '.*afile', which is a file, not a folder"),
    ("sub", r"is in the folder '.*afile/sub', which cannot exist: '.*afile' is a file, not a "
            r"folder")])
def test_saving_under_a_file_says_it_is_a_file(tmp_path, suffix, below, why):
    # a file where the folder should be was reported as a folder that "does not exist"
    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / below / f"m{suffix}"
    with pytest.raises(NotADirectoryError, match=r"save_sparse: path '.*afile/.*m\.[a-z]+' "
                                                 + why + r"; expected a path in an existing"):
        sk.save_sparse(sk.sparsify(net(), "csc", max_density=1.0), path)
    assert (tmp_path / "afile").read_text() == ""


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_arguments_of_the_wrong_type_are_named(tmp_path, suffix):
    # (path, model) in the wrong order failed with "'str' object has no attribute
    # 'named_modules'"; a path of None or a number with os's messages
    sparse = sparse_net("csc")
    path = tmp_path / f"m{suffix}"
    with pytest.raises(TypeError, match=r"save_sparse: model must be an nn\.Module, got str; "
                                        r"call save_sparse\(model, path\)"):
        sk.save_sparse(str(path), sparse)
    with pytest.raises(TypeError, match=r"save_sparse: path must be a str or os\.PathLike "
                                        r"\(a \.safetensors or \.pt file\), got int"):
        sk.save_sparse(sparse, 3)
    assert not path.exists()
    sk.save_sparse(sparse, path)
    fresh = net(seed=7)
    before = snapshot(fresh)
    with pytest.raises(TypeError, match=r"load_sparse: model must be an nn\.Module, got "
                                        r"PosixPath; call load_sparse\(model, path\)"):
        sk.load_sparse(path, fresh)
    with pytest.raises(TypeError, match=r"load_sparse: path must be a str or os\.PathLike "
                                        r"\(a \.safetensors or \.pt file, or a folder\), got "
                                        r"NoneType"):
        sk.load_sparse(fresh, None)
    assert_untouched(fresh, before)
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(sk.load_sparse(fresh, path)(x), sparse(x))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_compiled_model_saves_and_loads_as_the_model_it_wraps(tmp_path, suffix):
    # torch.compile(model) names every layer '_orig_mod.<name>': its file did not load into
    # the plain model ("the saved sparse layer '_orig_mod.0' does not exist in Sequential"),
    # nor a plain model's file into a compiled one
    sparse = sparse_net("csc")
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        want = sparse(x)
    path, plain_path = tmp_path / f"c{suffix}", tmp_path / f"p{suffix}"
    sk.save_sparse(torch.compile(sparse), path)
    sk.save_sparse(sparse, plain_path)
    for p in (path, plain_path):
        fresh = sk.load_sparse(net(seed=7), p)
        with torch.no_grad():
            assert torch.equal(fresh(x), want)
        inner = net(seed=7)
        compiled = torch.compile(inner, backend="eager")
        assert sk.load_sparse(compiled, p) is compiled
        assert isinstance(inner[3], SparseLinear)
        with torch.no_grad():
            assert torch.equal(compiled(x), want)


@pytest.mark.parametrize("saved,model_dtype", [(torch.bfloat16, torch.float32),
                                               (torch.float32, torch.bfloat16),
                                               (torch.float64, torch.float32)])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_file_of_another_dtype_loads_in_the_models_dtype(tmp_path, suffix, saved,
                                                           model_dtype):
    """As load_state_dict does for the dense state, the packed layers take the dtype of the
    layer they replace (they kept the file's: a bf16 file in a float32 model then raised
    'bias has dtype torch.bfloat16; expected the output dtype torch.float32' at forward)."""
    sparse = sparse_net("csc").to(saved)
    path = tmp_path / f"m{suffix}"
    sk.save_sparse(sparse, path)
    fresh = sk.load_sparse(net(seed=7).to(model_dtype), path)
    assert {p.dtype for p in fresh.parameters()} == {model_dtype}
    want = sparse_net("csc").to(saved).to(model_dtype)
    with torch.no_grad():
        assert torch.equal(fresh(X.to(model_dtype)), want(X.to(model_dtype)))

@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_model_on_the_meta_device_is_named_not_loaded(tmp_path, suffix):
    """A model built under torch.device("meta") has nothing to copy into: the error names
    the first meta tensor and what to do (it was 'Tensor.item() cannot be called on meta
    tensors' from a packed layer's checks); a real model still loads the same file."""
    sparse = sparse_net("2:4")
    path = tmp_path / f"m{suffix}"
    sk.save_sparse(sparse, path)
    with torch.device("meta"):
        meta = net()
    with pytest.raises(ValueError, match=r"parameter '0\.weight' on the meta device.*real "
                                         r"device"):
        sk.load_sparse(meta, path)
    assert all(p.is_meta for p in meta.parameters()) and type(meta[3]) is nn.Linear
    fresh = sk.load_sparse(net(seed=5), path)
    with torch.no_grad():
        assert torch.equal(fresh(X), sparse(X))


def test_safetensors_file_has_no_pickle_and_describes_the_layers(tmp_path):
    sparse = sparse_net("csc")
    sk.save_sparse(sparse, tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    assert not raw.startswith(b"PK") and b"\x80\x02" not in raw[:16]  # no zip, no pickle
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "sparsekern-sparse-model/1"
    layers = json.loads(meta["layers"])
    assert layers["3"] == {"kind": "linear", "layout": "csc", "shape": [16, 200], "bias": True}
    assert layers["0"]["kind"] == "conv2d" and layers["0"]["stride"] == [1, 1]
    assert layers["0"]["padding"] == [1, 1] and layers["0"]["groups"] == 1
    assert {"sparse.3.values", "sparse.3.indices", "sparse.3.offsets", "sparse.3.bias",
            "sparse.0.values"} <= keys
    assert not any(k.startswith("dense.") for k in keys)  # every layer with state is sparse


def test_tied_dense_weights_are_saved_to_safetensors(tmp_path):
    model = nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8), nn.Linear(4, 8, bias=False))
    model[2].weight = model[0].weight  # tied, as a language model head
    with torch.no_grad():
        model[1].weight.copy_(model[1].weight * (torch.rand(8, 4) > 0.8))
    sk.sparsify(model, "csc", max_density=1.0, layers=["1"])
    sk.save_sparse(model, tmp_path / "t.safetensors")
    fresh = nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8), nn.Linear(4, 8, bias=False))
    fresh[2].weight = fresh[0].weight
    sk.load_sparse(fresh, tmp_path / "t.safetensors")
    assert torch.equal(fresh[0].weight, model[0].weight) and fresh[2].weight is fresh[0].weight
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as f:  # stored once
        assert "dense.0.weight" in f.keys() and "dense.2.weight" not in f.keys()
        assert json.loads(f.metadata()["aliases"]) == {"dense.2.weight": "dense.0.weight"}
    # a model that does not tie them: the file's alias cannot be told from a forged one
    untied = nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8), nn.Linear(4, 8, bias=False))
    before = snapshot(untied)
    with pytest.raises(ValueError, match=r"t\.safetensors: alias 'dense\.2\.weight' -> "
                                         r"'dense\.0\.weight': Sequential does not tie "
                                         r"'2\.weight' to '0\.weight' \(they are different "
                                         r"tensors\)"):
        sk.load_sparse(untied, tmp_path / "t.safetensors")
    assert_untouched(untied, before)


@pytest.mark.parametrize("aliases,match", [
    ("not json", "'aliases' is not valid JSON"),
    ('["dense.2.weight"]', "JSON object of strings"),
    ('{"dense.2.weight": "dense.missing"}', "no such dense tensor"),
    ('{"dense.0.weight": "dense.0.weight"}', "must name a dense tensor the file does not hold"),
    ('{"sparse.1.values": "dense.0.weight"}', "must name a dense tensor"),
])
def test_bad_aliases_are_rejected(tmp_path, aliases, match):
    model = nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8), nn.Linear(4, 8, bias=False))
    model[2].weight = model[0].weight
    path = tmp_path / "t.safetensors"
    sk.save_sparse(model, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["aliases"] = aliases
    save_file(tensors, str(path), metadata=meta)
    fresh = nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8), nn.Linear(4, 8, bias=False))
    fresh[2].weight = fresh[0].weight
    before = snapshot(fresh)
    with pytest.raises(ValueError, match=match):
        sk.load_sparse(fresh, path)
    assert_untouched(fresh, before)


def _bn_net():
    return nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4)).eval()


def test_an_alias_the_model_does_not_tie_is_rejected(tmp_path):
    """A tampered file: BatchNorm's weight removed and 'aliased' to its bias (a tensor of the
    same shape). Loaded, the weight became the bias and the outputs were wrong, silently."""
    torch.manual_seed(0)
    model = _bn_net()
    with torch.no_grad():
        model[0].weight.mul_(torch.rand_like(model[0].weight) > 0.8)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    sk.sparsify(model, layout="csc")
    path = tmp_path / "a.safetensors"
    sk.save_sparse(model, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "dense.1.weight"}
    meta["aliases"] = json.dumps({"dense.1.weight": "dense.1.bias"})
    save_file(tensors, str(path), metadata=meta)
    fresh = _bn_net()
    before = snapshot(fresh)
    with pytest.raises(ValueError, match=r"a\.safetensors: alias 'dense\.1\.weight' -> "
                                         r"'dense\.1\.bias': Sequential does not tie "
                                         r"'1\.weight' to '1\.bias' \(they are different "
                                         r"tensors\)"):
        sk.load_sparse(fresh, path)
    assert_untouched(fresh, before)


def test_a_safetensors_file_without_layers_metadata_says_missing(tmp_path):
    path = tmp_path / "m.safetensors"
    sk.save_sparse(sparse_net("csc"), path)
    t, meta = _read_st(path)
    del meta["layers"]
    save_file(t, str(path), metadata=meta)
    model = net(seed=4)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"m\.safetensors: the metadata 'layers' is missing; "
                                         r"expected a JSON object"):
        sk.load_sparse(model, path)
    assert_untouched(model, before)


def test_a_non_tensor_state_cannot_go_to_safetensors(tmp_path):
    class WithExtra(nn.Module):
        def get_extra_state(self):
            return {"note": "x"}

        def set_extra_state(self, state):
            pass

    model = nn.Sequential(sparse_net("2:4"), WithExtra())
    with pytest.raises(ValueError, match=r"state entry '1\._extra_state' is a dict, not a "
                                         r"tensor; a \.safetensors file holds tensors only"):
        sk.save_sparse(model, tmp_path / "x.safetensors")


# -- rejections: tampered files --------------------------------------------------------------

def _read_st(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def tamper(src, dst, tensors=None, layers=None, dense=None):
    """Rewrite a saved file: ``tensors(layer entries)`` edits {layer: {field: value}}."""
    if str(src).endswith(".safetensors"):
        t, meta = _read_st(src)
        desc = json.loads(meta["layers"])
        entries = {n: dict(d, **{k: t[f"sparse.{n}.{k}"] for k in
                                 ("values", "indices", "offsets", "bias")
                                 if f"sparse.{n}.{k}" in t}) for n, d in desc.items()}
        state = {k[6:]: v for k, v in t.items() if k.startswith("dense.")}
    else:
        blob = torch.load(src, weights_only=True)
        entries = {**{n: dict(e, kind="linear") for n, e in blob["sparse"].items()},
                   **{n: dict(e, kind="conv2d") for n, e in blob["sparse_conv2d"].items()}}
        state = blob["dense"]
    for fn, arg in ((tensors, entries), (dense, state)):
        if fn is not None:
            fn(arg)
    if str(dst).endswith(".safetensors"):
        out, desc = {}, {}
        for n, e in entries.items():
            desc[n] = {k: v for k, v in e.items() if not isinstance(v, torch.Tensor)}
            desc[n]["bias"] = isinstance(e.get("bias"), torch.Tensor)
            desc[n].pop("values", None)
            for k in ("values", "indices", "offsets", "bias"):
                if isinstance(e.get(k), torch.Tensor):
                    out[f"sparse.{n}.{k}"] = e[k].contiguous()
        out.update({f"dense.{k}": v for k, v in state.items()})
        save_file(out, str(dst), metadata={"format": "sparsekern-sparse-model/1",
                                           "layers": json.dumps(desc)})
    else:
        strip = lambda e: {k: v for k, v in e.items() if k != "kind"}  # noqa: E731
        torch.save({"format": "sparsekern-sparse-model/1",
                    "sparse": {n: strip(e) for n, e in entries.items() if e["kind"] == "linear"},
                    "sparse_conv2d": {n: strip(e) for n, e in entries.items()
                                      if e["kind"] == "conv2d"},
                    "dense": state}, dst)


def _set(layer, field, value):
    def fn(entries):
        if value is _DROP:
            del entries[layer][field]
        else:
            entries[layer][field] = value(entries[layer][field]) if callable(value) else value
    return fn


_DROP = object()


def _copy(entry):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in entry.items()}


def _index(i, v):
    def f(t):
        t = t.clone()
        t.view(-1)[i] = v
        return t
    return f


REJECTIONS = [  # (id, layout saved, edit of the entries, expected message)
    ("csc index out of range", "csc", _set("3", "indices", _index(0, 999)),
     r"layer '3': csc row indices\[0\]=999 is out of range; expected 0 <= index < 16"),
    ("csc negative index", "csc", _set("5", "indices", _index(1, -1)),
     r"layer '5': csc row indices\[1\]=-1 is out of range"),
    ("csc offsets", "csc", _set("5", "offsets", _index(-1, 0)),
     r"layer '5': csc offsets must end at the number of stored entries"),
    ("bad 2:4 metadata", "2:4", _set("3", "indices", _index(0, 0)),
     r"layer '3': 2:4 indices row 0, group 0: positions \(0, 0\) must be strictly increasing"),
    ("values dtype", "csc", _set("3", "values", lambda t: t.to(torch.int32)),
     r"layer '3': values has dtype torch\.int32; expected one of float32"),
    ("indices dtype", "csc", _set("3", "indices", lambda t: t.to(torch.int64)),
     r"layer '3': csc indices has shape \[\d+\] and dtype torch\.int64; expected int16 or int32"),
    ("2:4 indices dtype", "2:4", _set("5", "indices", lambda t: t.to(torch.int32)),
     r"layer '5': 2:4 indices has dtype torch\.int32; expected torch\.uint8"),
    ("values shape", "2:4", _set("5", "values", lambda t: t[:, :-1]),
     r"layer '5': 2:4 values has shape \[8, 7\]; expected \[M, ceil\(K/4\)\*2\] = \[8, 8\]"),
    ("bias dtype", "csc", _set("3", "bias", lambda t: t.double()),
     r"layer '3': saved bias has dtype torch\.float64 on cpu; expected the values' dtype "
     r"torch\.float32 on cpu"),
    ("bias shape", "csc", _set("3", "bias", lambda t: t[:-1]),
     r"layer '3': saved bias is \[15\]; expected a tensor of shape \[16\]"),
    ("conv stride 0", "csc", _set("0", "stride", [0, 1]),
     r"layer '0': saved Conv2d: stride must be >= 1, got \[0, 1\]"),
    ("conv dilation 0", "2:4", _set("0", "dilation", [1, 0]),
     r"layer '0': saved Conv2d: dilation must be >= 1, got \[1, 0\]"),
    ("conv negative padding", "csc", _set("0", "padding", [-1, 1]),
     r"layer '0': saved Conv2d: padding must be >= 0, got \[-1, 1\]"),
    ("conv padding word", "csc", _set("0", "padding", "full"),
     r"layer '0': saved Conv2d: padding must be an int, a pair, 'same' or 'valid'; got 'full'"),
    ("conv groups", "csc", _set("0", "groups", 2),
     r"layer '0': saved Conv2d: SparseConv2d supports groups=1 only, got groups=2"),
    ("conv stride float", "csc", _set("0", "stride", [1.5, 1]),
     r"layer '0': saved Conv2d: stride must be an int or a pair of ints, got \[1\.5, 1\]"),
    ("conv padding_mode", "csc", _set("0", "padding_mode", "mirror"),
     r"layer '0': saved Conv2d: padding_mode must be one of"),
    ("conv geometry differs from the model", "csc", _set("0", "stride", [2, 2]),
     r"layer '0': saved Conv2d \[stride, padding, dilation, padding_mode, groups\] = "
     r"\[\[2, 2\], \[1, 1\], \[1, 1\], 'zeros', 1\] but the model has \[\[1, 1\], \[1, 1\], "
     r"\[1, 1\], 'zeros', 1\]"),
    ("shape differs from the model", "csc", _set("5", "shape", [8, 17]),
     r"layer '5': saved shape \[8, 17\] but the model has \[8, 16\]"),
    ("shape not ints", "csc", _set("5", "shape", [8, "16"]),
     r"layer '5': saved shape is \[8, '16'\]; expected \[out_features, in_features\]"),
    ("unknown layout", "csc", _set("5", "layout", "coo"),
     r"layer '5': layout must be one of '1:4', '2:4', 'bsr', 'csc', 'sell'; got 'coo'"),
    ("missing layout", "csc", _set("5", "layout", _DROP),
     r"layer '5': the saved entry has no 'layout'"),
    ("a layer the model lacks", "csc",
     lambda e: e.__setitem__("9", _copy(e["5"])),
     r"the saved sparse layer '9' does not exist in Sequential"),
    ("a layer of another kind", "csc",
     lambda e: e.__setitem__("1", _copy(e["5"])),
     r"the saved sparse layer '1' is a Linear, but the model has a ReLU there"),
]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("case", REJECTIONS, ids=[c[0] for c in REJECTIONS])
def test_a_bad_file_is_rejected_and_the_model_untouched(tmp_path, suffix, case):
    _, layout, edit, message = case
    good = tmp_path / f"good{suffix}"
    sk.save_sparse(sparse_net(layout), good)
    bad = tmp_path / f"bad{suffix}"
    tamper(good, bad, tensors=edit)
    model = net(seed=4)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        sk.load_sparse(model, bad)
    assert_untouched(model, before)
    with torch.no_grad():
        model(X)  # still the working dense model


DENSE_REJECTIONS = [
    ("missing dense key", lambda s: s.pop("x"),
     r"state does not match the model: missing \['x'\], unexpected \[\]"),
    ("unexpected dense key", lambda s: s.__setitem__("y", torch.zeros(2)),
     r"state does not match the model: missing \[\], unexpected \['y'\]"),
    ("dense shape", lambda s: s.__setitem__("x", torch.zeros(4)),
     r"state 'x': saved shape \[4\] but the model has \[3\]"),
    ("dense dtype", lambda s: s.__setitem__("x", torch.zeros(3, dtype=torch.int64)),
     r"state 'x': saved dtype torch\.int64 but the model has torch\.float32"),
]


class WithBuffer(nn.Sequential):
    def __init__(self, seed=0):
        super().__init__(*net(seed))
        self.register_buffer("x", torch.arange(3.0))


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("case", DENSE_REJECTIONS, ids=[c[0] for c in DENSE_REJECTIONS])
def test_a_bad_dense_state_is_rejected_before_any_layer_is_swapped(tmp_path, suffix, case):
    _, edit, message = case
    model = WithBuffer()
    prune.prune_model(model, granularity="2:4")
    sk.sparsify(model, "2:4")
    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    sk.save_sparse(model, good)
    sk.load_sparse(WithBuffer(seed=2), good)  # the untampered file loads
    tamper(good, bad, dense=edit)
    fresh = WithBuffer(seed=2)
    before = snapshot(fresh)
    with pytest.raises(ValueError, match=message):
        sk.load_sparse(fresh, bad)
    assert_untouched(fresh, before)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_layer_missing_from_the_file_is_rejected(tmp_path, suffix):
    sparse = sparse_net("csc")
    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    sk.save_sparse(sparse, good)
    tamper(good, bad, tensors=lambda e: e.pop("5"))
    model = net(seed=4)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"state does not match the model: missing "
                                         r"\['5\.weight', '5\.bias'\], unexpected \[\]"):
        sk.load_sparse(model, bad)
    assert_untouched(model, before)


def test_safetensors_specific_rejections(tmp_path):
    good = tmp_path / "good.safetensors"
    sk.save_sparse(sparse_net("csc"), good)
    t, meta = _read_st(good)
    model = net(seed=4)
    before = snapshot(model)
    lstm = {"kind": "lstm", "layout": "csc", "bias": True}
    cases = [
        ({k: v for k, v in t.items() if k != "sparse.3.indices"}, meta,
         r"layer '3' has no tensor 'sparse\.3\.indices'"),
        (dict(t, **{"stray": torch.zeros(1)}), meta,
         r"unexpected tensors \['stray'\] \(not part of a layer named in the metadata"),
        (t, {"format": "other"},
         r"is not a file written by sparsekern\.save_sparse \(its metadata has "
         r"format='other', expected 'sparsekern-sparse-model/1'\)"),
        (t, dict(meta, layers="{not json"), r"the metadata 'layers' is not valid JSON"),
        (t, dict(meta, layers="[1, 2]"), r"the metadata 'layers' must be a JSON object"),
        (t, dict(meta, layers=json.dumps(dict(json.loads(meta["layers"]), **{"5": lstm}))),
         r"layer '5': saved kind 'lstm'; expected 'linear' or 'conv2d'"),
    ]
    for i, (tensors, md, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(tensors, str(path), metadata=md)
        with pytest.raises(ValueError, match=message):
            sk.load_sparse(model, path)
        assert_untouched(model, before)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match=r"corrupt\.safetensors is not a readable safetensors "
                                         r"file"):
        sk.load_sparse(model, corrupt)
    with pytest.raises(TypeError, match=r"map_location must be None, a str or a torch\.device "
                                        r"for a \.safetensors file, got dict"):
        sk.load_sparse(model, good, map_location={"cuda:0": "cpu"})
    assert_untouched(model, before)


def test_pt_files_of_the_wrong_shape_are_rejected(tmp_path):
    model = net()
    for i, (blob, message) in enumerate([
            ({"format": "sparsekern-sparse-model/1", "sparse": [1], "dense": {}},
             r"'sparse' is a list, expected a dict"),
            ({"format": "sparsekern-sparse-model/1", "sparse": {"3": 5}, "dense": {}},
             r"the entry of layer '3' is a int, expected a dict"),
            ({"format": "sparsekern-sparse-model/1", "sparse": {}, "dense": [1]},
             r"'dense' is a list, expected a dict")]):
        torch.save(blob, tmp_path / f"{i}.pt")
        with pytest.raises(ValueError, match=message):
            sk.load_sparse(model, tmp_path / f"{i}.pt")


# -- SparseConv2d geometry and load_state_dict ----------------------------------------------------

def test_sparse_conv_rejects_geometry_it_cannot_run():
    fmt = sk.to_sparse(torch.zeros(4, 4 * 9), "csc")
    for kw, message in [(dict(stride=0), r"stride must be >= 1, got 0"),
                        (dict(dilation=(1, 0)), r"dilation must be >= 1, got \(1, 0\)"),
                        (dict(padding=-1), r"padding must be >= 0, got -1"),
                        (dict(stride=True), r"stride must be an int or a pair of ints, got True")]:
        with pytest.raises(ValueError, match=message):
            SparseConv2d(fmt, 4, 3, **kw)


def _module_tensors(m):
    return {k: (v, v.clone()) for k, v in list(m.named_parameters()) + list(m.named_buffers())}


def _assert_same(m, saved):
    now = dict(list(m.named_parameters()) + list(m.named_buffers()))
    for k, (obj, copy) in saved.items():
        assert now[k] is obj and torch.equal(now[k], copy)


@pytest.mark.parametrize("other_nnz", [False, True])
def test_a_rejected_state_dict_changes_nothing(other_nnz):
    torch.manual_seed(0)
    W = torch.randn(6, 8) * (torch.rand(6, 8) > 0.5)
    layer = SparseLinear(sk.to_sparse(W, "csc"), torch.randn(6))
    x = torch.randn(3, 8)
    y = layer(x)
    W2 = torch.randn(6, 8) * (torch.rand(6, 8) > (0.2 if other_nnz else 0.5))
    state = SparseLinear(sk.to_sparse(W2, "csc"), torch.randn(6)).state_dict()
    state["indices"] = state["indices"].clone()
    state["indices"][0] = 99
    saved = _module_tensors(layer)
    with pytest.raises(ValueError, match=r"csc row indices\[0\]=99 is out of range"):
        layer.load_state_dict(state)
    _assert_same(layer, saved)
    assert torch.equal(layer(x), y)  # the next forward still works, on the old weights
    state = layer.state_dict()
    state["bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"state 'bias' has shape \[5\]; expected \[6\]"):
        layer.load_state_dict(state)
    _assert_same(layer, saved)


def test_a_rejected_conv_state_dict_changes_nothing():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.7)
    layer = SparseConv2d.from_dense(conv, "csc")
    state = layer.state_dict()
    # the dict form (files from before the tensor form) goes through the same checks
    state["_extra_state"] = dict(decode_extra_state(state["_extra_state"]), stride=[0, 1])
    saved = _module_tensors(layer)
    with pytest.raises(ValueError, match=r"stride must be >= 1, got \[0, 1\]"):
        layer.load_state_dict(state)
    _assert_same(layer, saved)
    assert layer.stride == (1, 1)
    assert torch.allclose(layer(X[:, :4]), conv(X[:, :4]), atol=1e-5)


def test_a_clear_error_when_safetensors_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"a \.safetensors file needs the safetensors package: "
                                          r"pip install safetensors"):
        sk.save_sparse(sparse_net("csc"), tmp_path / "m.safetensors")
    sk.save_sparse(sparse_net("csc"), tmp_path / "m.pt")  # .pt files do not need it


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("what", ["empty", "junk", "zeros", "truncated"])
def test_an_unreadable_file_raises_value_error_and_leaves_the_model(tmp_path, suffix, what):
    """Empty, foreign or cut-short bytes raise the documented ValueError (not EOFError,
    pickle, zip or safetensors errors), naming the file; a missing file stays an OSError."""
    path = tmp_path / f"m{suffix}"
    if what == "truncated":
        sk.save_sparse(sparse_net("csc"), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes({"empty": b"", "junk": b"not a sparsekern file", "zeros": b"\0" * 100}[what])
    model = net(1)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"m\.(pt|safetensors).* not a (readable|file)"):
        sk.load_sparse(model, path)
    assert_untouched(model, before)
    with pytest.raises(FileNotFoundError):
        sk.load_sparse(model, tmp_path / f"missing{suffix}")


def test_a_bad_map_location_is_not_reported_as_a_bad_file(tmp_path):
    """Only damaged bytes become 'not a readable file'; an unknown map_location is named as
    such, before the file is read."""
    path = tmp_path / "m.pt"
    sk.save_sparse(sparse_net("csc"), path)
    with pytest.raises(ValueError, match=r"map_location='nonsense_device' is not a device "
                                         r"\(.*\); expected None or a device this process has "
                                         r"\('cpu'") as info:
        sk.load_sparse(net(1), path, map_location="nonsense_device")
    assert "not a readable file" not in str(info.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_map_location_is_checked_before_the_file_is_read(tmp_path, monkeypatch, suffix):
    """'meta' and a device this process lacks were blamed on the file ('not a readable
    safetensors file: device meta is invalid') or a layer ('Tensor.item() cannot be called
    on meta tensors'): the error names map_location, and the model is left as it was."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / f"m{suffix}"
    sk.save_sparse(sparse_net("csc"), path)
    model = net(1)
    before = snapshot(model)
    for loc, message in [
            ("meta", r"map_location='meta': the meta device holds no data"),
            (torch.device("meta"), r"map_location=device\(type='meta'\): the meta device"),
            ("cuda", r"map_location='cuda' but this process has no cuda device "
                     r"\(torch\.cuda\.is_available\(\) is False\); expected None or a "
                     r"device this process has \('cpu'"),
            (torch.device("cuda:0"), r"map_location=device\(type='cuda', index=0\) but this "
                                     r"process has no cuda device"),
            ({"cpu": "meta"}, r"map_location\['cpu'\]='meta': the meta device")]:
        with pytest.raises(ValueError, match=message):
            sk.load_sparse(model, path, map_location=loc)
        assert_untouched(model, before)
        with pytest.raises(ValueError, match=message):  # not read: no FileNotFoundError
            sk.load_sparse(model, tmp_path / f"missing{suffix}", map_location=loc)
    with pytest.raises(TypeError, match=r"map_location must be None, a str or torch\.device, "
                                        r"a dict or a function \(as torch\.load takes\), got "
                                        r"int"):
        sk.load_sparse(model, path, map_location=0)
    with pytest.raises(TypeError, match=r"map_location\['cpu'\] must be a device name \(str\)"):
        sk.load_sparse(model, path, map_location={"cpu": torch.device("cpu")})
    assert_untouched(model, before)
    for loc in (None, "cpu", torch.device("cpu")):
        out = sk.load_sparse(net(1), path, map_location=loc)
        torch.testing.assert_close(out(X), sparse_net("csc")(X))


def test_map_location_dict_and_function_still_serve_a_pt_file(tmp_path):
    """torch.load's other forms stay usable for a .pt file."""
    path = tmp_path / "m.pt"
    sk.save_sparse(sparse_net("csc"), path)
    for loc in ({"cpu": "cpu"}, lambda storage, location: storage):
        out = sk.load_sparse(net(1), path, map_location=loc)
        torch.testing.assert_close(out(X), sparse_net("csc")(X))


def test_the_extra_state_is_a_tensor_and_the_dict_of_earlier_files_still_loads():
    torch.manual_seed(3)
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) > 0.6)
    layer = SparseLinear.from_dense(lin, "csc")
    state = layer.state_dict()
    assert state["_extra_state"].dtype == torch.uint8  # a state_dict of tensors only
    assert decode_extra_state(state["_extra_state"]) == {"layout": "csc", "shape": [8, 16]}
    x = torch.randn(3, 16)
    for extra in (state["_extra_state"], decode_extra_state(state["_extra_state"])):
        other = nn.Linear(16, 8)
        with torch.no_grad():
            other.weight.mul_(torch.rand_like(other.weight) > 0.3)
        fresh = SparseLinear.from_dense(other, "csc")
        fresh.load_state_dict(dict(state, _extra_state=extra))
        assert torch.equal(fresh(x), layer(x))
    with pytest.raises(ValueError, match=r"extra state must be a dict or a uint8 \[n\] tensor of "
                                         r"its JSON, got a str"):
        fresh.load_state_dict(dict(state, _extra_state="csc"))


@pytest.mark.parametrize("layout", ["2:4", "csc"])
def test_a_model_loaded_from_safetensors_saves_to_pt_and_back(tmp_path, layout):
    # Empty format tensors (2:4 offsets) read from a safetensors file used to share their
    # neighbour's address, and torch.save refused the loaded model.
    sk.save_sparse(sparse_net(layout), tmp_path / "m.safetensors")
    loaded = sk.load_sparse(sparse_net(layout), tmp_path / "m.safetensors")
    sk.save_sparse(loaded, tmp_path / "m.pt")
    again = sk.load_sparse(sparse_net(layout), tmp_path / "m.pt")
    torch.testing.assert_close(again(X), loaded(X), rtol=0, atol=0)
