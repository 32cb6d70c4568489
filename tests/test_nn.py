"""SparseLinear, sparsify, state_dict and save_sparse/load_sparse round trips."""
import copy
import io

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.auto import synthetic_table
from tests.helpers import TOL, random_pattern_weight, rel_err


def pruned_linear(K, M, layout, blocksize=(4, 4), density=0.3, bias=True):
    lin = nn.Linear(K, M, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(random_pattern_weight(M, K, layout, density=density, blocksize=blocksize))
    return lin


@pytest.mark.parametrize("layout,blocksize", [("2:4", None), ("csc", None), ("bsr", (4, 4))])
def test_sparse_linear_2d_inputs_of_any_strides_and_no_rows(layout, blocksize):
    """The 2-D fast path (no reshapes): contiguous, transposed, strided and empty inputs."""
    lin = pruned_linear(24, 16, layout)
    layer = sk.SparseLinear.from_dense(lin, layout=layout, blocksize=blocksize)
    for x in (torch.randn(5, 24), torch.randn(24, 5).t(), torch.randn(5, 48)[:, ::2],
              torch.randn(0, 24)):
        y = layer(x)
        assert y.shape == (x.shape[0], 16)
        if x.shape[0]:
            assert rel_err(y, lin(x)) < TOL[torch.float32]
    assert layer(torch.randn(7, 24)).is_contiguous()


@pytest.mark.parametrize("layout,blocksize", [("2:4", None), ("csc", None), ("bsr", (4, 4))])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_dense(layout, blocksize, bias):
    lin = pruned_linear(24, 16, layout, bias=bias)
    layer = sk.SparseLinear.from_dense(lin, layout=layout, blocksize=blocksize)
    for shape in [(24,), (5, 24), (2, 3, 24)]:
        x = torch.randn(*shape)
        assert rel_err(layer(x), lin(x)) < TOL[torch.float32]
    assert layer.in_features == 24 and layer.out_features == 16
    assert torch.equal(layer.to_dense().weight, lin.weight)


def test_sparse_linear_trains_on_fixed_pattern():
    lin = pruned_linear(12, 8, "csc")
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, y = torch.randn(32, 12), torch.randn(32, 8)
    before = layer.values.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(layer(x), y).backward()
        opt.step()
    assert not torch.equal(before, layer.values.detach())
    dense = layer.to_dense().weight
    assert bool((dense[lin.weight == 0] == 0).all())  # pattern held


@pytest.mark.parametrize("layout,blocksize", [("2:4", None), ("csc", None), ("bsr", (4, 4))])
def test_state_dict_round_trip_weights_only(layout, blocksize):
    lin = pruned_linear(20, 12, layout)
    layer = sk.SparseLinear.from_dense(lin, layout=layout, blocksize=blocksize)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    # A fresh layer with another pattern adopts the saved one.
    other = sk.SparseLinear.from_dense(pruned_linear(20, 12, layout, density=0.1), layout=layout,
                                       blocksize=blocksize)
    other.load_state_dict(state)
    x = torch.randn(4, 20)
    assert torch.equal(other(x), layer(x))


@pytest.mark.parametrize("layout,blocksize", [("2:4", None), ("csc", None), ("bsr", (4, 4))])
@pytest.mark.parametrize("model_dtype,saved", [(torch.bfloat16, torch.float32),
                                               (torch.float32, torch.bfloat16),
                                               (torch.float16, torch.float64)])
@pytest.mark.parametrize("same_pattern", [True, False])
def test_load_state_dict_of_another_dtype_keeps_the_models_dtype(layout, blocksize, model_dtype,
                                                                saved, same_pattern):
    """load_state_dict casts into the module's dtype, as nn.Linear's does (the values took the
    state's dtype: a float32 state in a bfloat16 model left float32 values next to a bfloat16
    bias, and the forward raised on the bfloat16 input)."""
    src = sk.SparseLinear.from_dense(pruned_linear(20, 12, layout), layout=layout,
                                     blocksize=blocksize).to(saved)
    dst = sk.SparseLinear.from_dense(
        pruned_linear(20, 12, layout, density=0.3 if same_pattern else 0.1), layout=layout,
        blocksize=blocksize).to(model_dtype)
    dst.load_state_dict(src.state_dict())
    assert dst.values.dtype == dst.bias.dtype == model_dtype
    assert dst.indices.dtype == src.indices.dtype and dst.offsets.dtype == src.offsets.dtype
    x = torch.randn(4, 20).to(model_dtype)
    want = nn.functional.linear(x.double(), src.weight.to_dense().to(model_dtype).double(),
                                src.bias.to(model_dtype).double())
    y = dst(x)
    assert y.dtype == model_dtype
    assert rel_err(y.double(), want) < TOL[model_dtype]


def test_load_state_dict_rejects_bad_indices():
    layer = sk.SparseLinear.from_dense(pruned_linear(8, 6, "csc"), layout="csc")
    state = layer.state_dict()
    state["indices"] = state["indices"].clone()
    state["indices"][0] = 99
    with pytest.raises(ValueError, match=r"csc row indices\[0\]=99 is out of range"):
        layer.load_state_dict(state)


def test_load_state_dict_of_a_model_names_the_rejected_layer():
    """Two packed layers of one model: the error names the one whose state is bad (torch's
    prefix "2." -> layer '2'), keeps the rest of the message and type, changes nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    prune.prune_model(model, 0.8)
    sk.sparsify(model, layout="csc")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = model.state_dict()
    state["2.indices"] = state["2.indices"].clone()
    state["2.indices"][0] = 999
    with pytest.raises(ValueError, match=r"^layer '2': csc row indices\[0\]=999 is out of "
                                         r"range; expected 0 <= index < 64"):
        model.load_state_dict(state)
    # the layout says bsr, the tensors are csc's
    state = model.state_dict()
    extra = sk._packed_module.decode_extra_state(state["0._extra_state"])
    state["0._extra_state"] = sk._packed_module.encode_extra_state(dict(extra, layout="bsr"))
    with pytest.raises(ValueError, match=r"^layer '0': bsr values has shape"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["2.values"] = [1.0]
    with pytest.raises(TypeError, match=r"^layer '2': state '2\.values' is a list, expected a "
                                        r"tensor"):
        model.load_state_dict(state)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


#: A latency table in which every sparse format beats dense (so "auto" decisions follow the
#: pattern, not this machine's timings).
FAST = synthetic_table({n: (1.0, {"2:4": [(0.5, 0.5)], "csc": [(0.05, 0.1), (0.5, 1.0)]})
                        for n in ("fc1", "fc2", "head")})


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_sparsify_swaps_only_pruned_layers():
    torch.manual_seed(0)
    model = MLP()
    with torch.no_grad():
        model.fc1.weight.copy_(random_pattern_weight(64, 32, "2:4"))
        model.fc2.weight.copy_(random_pattern_weight(64, 64, "csc", density=0.1))
    x = torch.randn(7, 32)
    ref = model(x)
    sk.sparsify(model, layout="auto", latency_table=FAST)
    assert isinstance(model.fc1, sk.SparseLinear) and model.fc1.layout == "2:4"
    assert isinstance(model.fc2, sk.SparseLinear) and model.fc2.layout == "csc"
    assert type(model.head) is nn.Linear
    assert model.sparsekern_report["head"][0] == "dense"
    assert rel_err(model(x), ref) < TOL[torch.float32]


def test_sparsify_explicit_layouts():
    model = MLP()
    with torch.no_grad():
        model.fc1.weight.copy_(random_pattern_weight(64, 32, "bsr", blocksize=(8, 8), density=0.3))
    x = torch.randn(3, 32)
    ref = model(x)
    sk.sparsify(model, layout="bsr", blocksize=(8, 8))
    assert isinstance(model.fc1, sk.SparseLinear) and model.fc1.layout == "bsr"
    assert type(model.fc2) is nn.Linear  # dense weight: left alone
    assert rel_err(model(x), ref) < TOL[torch.float32]
    m2 = MLP()
    sk.sparsify(m2, layout="2:4")
    assert all(type(m) is nn.Linear for m in (m2.fc1, m2.fc2, m2.head))


def test_sparsify_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"layout must be 'auto', '1:4', '2:4', 'bsr', 'csc' or 'sell'; got 'x'"):
        sk.sparsify(MLP(), layout="x")
    with pytest.raises(ValueError, match=r"max_density must be in \[0, 1\], got 2"):
        sk.sparsify(MLP(), layout="csc", max_density=2)


def test_sparsify_names_a_model_or_layout_of_the_wrong_type():
    # sparsify("csc", model) printed the whole model's repr as the bad layout, and
    # sparsify(None) failed with "'NoneType' object has no attribute 'named_modules'"
    torch.manual_seed(0)
    model = MLP()
    with pytest.raises(TypeError, match=r"sparsify: model must be an nn\.Module, got str; call "
                                        r"sparsify\(model, layout=\.\.\.\)"):
        sk.sparsify("csc", model)
    with pytest.raises(TypeError, match=r"sparsify: model must be an nn\.Module, got NoneType"):
        sk.sparsify(None, layout="csc")
    with pytest.raises(TypeError, match=r"sparsify: model must be an nn\.Module, got method"):
        sk.sparsify(model.forward, layout="csc")
    with pytest.raises(TypeError, match=r"layout must be a str \('auto', '1:4', '2:4', 'bsr', "
                                        r"'csc' or 'sell'\), got MLP$"):
        sk.sparsify(model, layout=MLP())
    with pytest.raises(TypeError, match=r"layout must be a str .*, got MLP$"):
        prune.convert(model, layout=MLP())
    # nothing changed: the model still runs as before on fresh inputs
    x = torch.randn(4, 32)
    torch.manual_seed(0)
    ref = MLP()
    assert all(type(m) is nn.Linear for m in (model.fc1, model.fc2, model.head))
    assert torch.equal(model(x), ref(x))


def test_sparsify_names_a_layer_on_the_meta_device():
    # a model built under torch.device("meta") (weights not loaded yet) failed inside
    # torch.nonzero with "The register_meta function for torch.nonzero() raises unimplemented"
    with torch.device("meta"):
        model = MLP()
    with pytest.raises(ValueError, match=r"sparsify: layer 'fc1' has its weight on the meta "
                                        r"device \(no values to pack\); load the weights first, "
                                        r"or load a saved sparse model with "
                                        r"sparsekern.load_sparse"):
        sk.sparsify(model, layout="csc")
    assert all(type(m) is nn.Linear for m in (model.fc1, model.fc2, model.head))
    torch.manual_seed(0)
    real = MLP()  # the same model on a real device still packs and matches itself
    with torch.no_grad():
        real.fc1.weight.copy_(random_pattern_weight(64, 32, "csc", density=0.1))
    ref = copy.deepcopy(real)
    x = torch.randn(4, 32)
    assert rel_err(sk.sparsify(real, layout="csc")(x), ref(x)) < TOL[torch.float32]


def test_save_and_load_sparse_into_fresh_model(tmp_path):
    torch.manual_seed(1)
    model = MLP()
    with torch.no_grad():
        model.fc1.weight.copy_(random_pattern_weight(64, 32, "2:4"))
        model.fc2.weight.copy_(random_pattern_weight(64, 64, "csc", density=0.1))
    sk.sparsify(model, latency_table=FAST)
    path = tmp_path / "model.pt"
    sk.save_sparse(model, path)
    fresh = sk.load_sparse(MLP(), path)
    assert isinstance(fresh.fc1, sk.SparseLinear) and isinstance(fresh.fc2, sk.SparseLinear)
    x = torch.randn(5, 32)
    assert torch.equal(fresh(x), model(x))


def test_load_sparse_rejects_mismatched_model(tmp_path):
    model = MLP()
    with torch.no_grad():
        model.fc1.weight.copy_(random_pattern_weight(64, 32, "2:4"))
    sk.sparsify(model, latency_table=FAST)
    path = tmp_path / "m.pt"
    sk.save_sparse(model, path)

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 64)

    with pytest.raises(ValueError, match=r"layer 'fc1': saved shape \[64, 32\] but the model "
                                         r"has \[64, 16\]"):
        sk.load_sparse(Other(), path)
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"is not a file written by sparsekern.save_sparse"):
        sk.load_sparse(MLP(), tmp_path / "bad.pt")


def test_sparsify_swaps_pruned_conv2d():
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1),
                          nn.Conv2d(16, 16, 3, groups=2))
    with torch.no_grad():
        w = model[0].weight
        w.copy_(random_pattern_weight(16, 72, "csc", density=0.2).reshape(w.shape))
    x = torch.randn(2, 8, 10, 10)
    ref = model(x)
    sk.sparsify(model, layout="csc")
    assert isinstance(model[0], sk.SparseConv2d)
    assert type(model[2]) is nn.Conv2d  # dense weight
    assert model.sparsekern_report["3"][0] == "dense"  # grouped: kept dense
    assert rel_err(model(x), ref) < TOL[torch.float32]


def test_frozen_layers_stay_frozen_through_sparsify_and_load_sparse(tmp_path):
    """A frozen layer (requires_grad False: partial fine-tuning) came back trainable from
    sparsify, so an optimizer step changed weights that the dense model kept fixed."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8), nn.Conv2d(2, 4, 1))
    masks = prune.prune_model(dense, None, granularity="2:4", layers=["0", "2"])
    dense[0].requires_grad_(False)
    dense[2].bias.requires_grad_(False)
    dense[3].weight.requires_grad_(False)
    with torch.no_grad():
        dense[3].weight[:, 1] = 0  # 2 of every 4 (K = 2, padded to 4) are zero
    sparse = sk.sparsify(copy.deepcopy(dense), layout="2:4")
    assert isinstance(sparse[3], sk.SparseConv2d)
    want = [p.requires_grad for p in dense.parameters()]
    assert [p.requires_grad for p in sparse.parameters()] == want
    x = torch.randn(5, 16)
    for m in (dense, sparse):
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        with prune.MaskHolder(m, masks if m is dense else {}):
            m[:3](x).square().sum().backward()
            opt.step()
    with torch.no_grad():
        assert torch.allclose(sparse[:3](x), dense[:3](x), atol=1e-6)
    path = tmp_path / "m.safetensors"
    sk.save_sparse(sparse, path)
    fresh = copy.deepcopy(dense)  # the same layers frozen
    sk.load_sparse(fresh, path)
    assert [p.requires_grad for p in fresh.parameters()] == want


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["2:4", "csc", "bsr"])
def test_a_layer_cast_to_half_takes_float32_activations(layout, dtype):
    """Weight-only compression through the layers: .half() / .bfloat16() casts the bias too,
    and float32 activations must still work (the bias is added upcast, exactly as nn.Linear
    would with the same half-precision parameters upcast)."""
    g = torch.Generator().manual_seed(0)
    bs = (4, 4) if layout == "bsr" else None
    lin = nn.Linear(200, 12)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        lin.weight.copy_(random_pattern_weight(12, 200, layout, density=0.3, blocksize=bs or (4, 4),
                                               generator=g))
        conv.weight.copy_(random_pattern_weight(8, 36, layout, density=0.3,
                                                blocksize=bs or (4, 4), generator=g
                                                ).reshape(8, 4, 3, 3))
    model = nn.Sequential(conv, nn.Flatten(), lin)  # every parameter is in a sparse layer
    kw = {"blocksize": bs} if bs else {}
    if layout != "2:4":
        kw["max_density"] = 1.0
    sparse = sk.sparsify(copy.deepcopy(model), layout=layout, layers=["0", "2"], **kw).to(dtype)
    assert isinstance(sparse[0], sk.SparseConv2d) and isinstance(sparse[2], sk.SparseLinear)
    ref = copy.deepcopy(model).to(dtype).float()  # the same rounded parameters, in float32
    x = torch.randn(3, 4, 5, 5, generator=g)
    out = sparse(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert sparse[2].bias.grad is not None and sparse[2].bias.grad.dtype == dtype
    assert sparse[0].bias.grad is not None and sparse[0].bias.grad.dtype == dtype


@pytest.mark.parametrize("numel_k", [96, 100])
def test_max_density_accepts_a_weight_pruned_to_it_up_to_whole_entries(numel_k):
    """prune_model(0.7) keeps ceil(0.3 * numel) entries (30.002% of 96 x 96): sparsify's
    default csc limit of 0.3 must pack it (it said 'stored fraction 0.30 > 0.3'); one entry
    more than that stays dense."""
    lin = nn.Linear(numel_k, 96)
    model = nn.Sequential(lin)
    masks = prune.prune_model(model, 0.7, "fine")
    kept = int(masks["0"].sum())
    assert kept == -(-3 * 96 * numel_k // 10)  # ceil(0.3 * numel)
    packed = sk.sparsify(copy.deepcopy(model), layout="csc")
    assert packed.sparsekern_report["0"][0] == "csc", packed.sparsekern_report
    with torch.no_grad():
        lin.weight[lin.weight == 0] = torch.where(torch.arange(int((lin.weight == 0).sum())) == 0,
                                                  1.0, 0.0)
    assert int((lin.weight != 0).sum()) == kept + 1
    packed = sk.sparsify(copy.deepcopy(model), layout="csc")
    assert packed.sparsekern_report["0"][0] == "dense", packed.sparsekern_report


def test_max_density_one_packs_a_bsr_whose_edge_blocks_store_more_than_the_matrix():
    """Linear 512 -> 100 with 32x32 blocks: the edge block row is padded to 128 rows, so a
    weight keeping a value in every block stores 1.28 x M*K. max_density=1.0 (pack whatever
    is stored) must pack it; a lower limit compares the stored fraction with padding."""
    lin = nn.Linear(512, 100, bias=False)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(100, 512, generator=torch.Generator().manual_seed(0)) < 0.1)
    model = nn.Sequential(lin)
    packed = sk.sparsify(copy.deepcopy(model), "bsr", blocksize=(32, 32), max_density=1.0)
    assert packed.sparsekern_report["0"] == (
        "bsr", "stored fraction 1.28 (above 1: padded edge blocks); max_density=1.0 packs "
               "whatever is stored")  # it said 'stored fraction 1.28 <= 1.0'
    x = torch.randn(3, 512)
    torch.testing.assert_close(packed(x), model(x), rtol=1e-5, atol=1e-5)
    kept = sk.sparsify(copy.deepcopy(model), "bsr", blocksize=(32, 32), max_density=0.99)
    assert kept.sparsekern_report["0"] == ("dense", "stored fraction 1.28 > 0.99 (max_density)")


def test_functional_spmm_adds_a_half_bias_to_float32_activations():
    W = random_pattern_weight(12, 32, "csc", density=0.3)
    A = sk.to_sparse(W.half(), layout="csc")
    bias = torch.randn(12).half()
    B = torch.randn(32, 5)
    out = sk.functional.spmm(A, B, bias)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, W.half().float() @ B + bias.float()[:, None], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("layout", ["2:4", "csc", "bsr"])
def test_sparsify_under_inference_mode_stays_trainable(layout):
    """Packing is a conversion: under torch.inference_mode the sparse layers' tensors must
    still be normal tensors (else training later fails: "Inference tensors cannot be saved
    for backward"), for a model built outside it and one built inside it."""
    torch.manual_seed(0)
    for built_inside in (False, True):
        with torch.inference_mode(built_inside):
            model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Conv2d(1, 1, 1))
        dense = nn.Sequential(nn.Linear(32, 16))
        with torch.no_grad():
            W = random_pattern_weight(16, 32, layout, density=0.2, blocksize=(4, 4))
            dense[0].weight.copy_(W)
            dense[0].bias.copy_(model[0].bias)
        with torch.inference_mode():
            model[0].weight.copy_(W)
            packed = sk.sparsify(model[:1], layout=layout, blocksize=(4, 4) if layout == "bsr"
                                 else None)
            single = sk.SparseLinear.from_dense(dense[0], layout=layout,
                                                blocksize=(4, 4) if layout == "bsr" else None)
        for layer in (packed[0], single):
            assert isinstance(layer, sk.SparseLinear)
            assert not any(t.is_inference() for t in layer.state_dict().values()
                           if isinstance(t, torch.Tensor))
            x = torch.randn(3, 32)
            layer(x).sum().backward()
            assert layer.values.grad is not None and layer.bias.grad is not None
        with torch.no_grad():
            torch.testing.assert_close(single(x), dense(x))
    conv = nn.Conv2d(4, 8, 3)
    with torch.no_grad():
        conv.weight.copy_(random_pattern_weight(8, 36, "2:4").reshape(conv.weight.shape))
    with torch.inference_mode():
        sconv = sk.SparseConv2d.from_dense(conv, layout="2:4")
    assert not sconv.values.is_inference() and not sconv.bias.is_inference()


@pytest.mark.parametrize("layout", ["csc", "2:4"])
def test_transformer_encoder_fast_path_runs_the_sparse_layers(layout):
    """nn.TransformerEncoderLayer in eval mode without grad takes a fused fast path that
    reads linear1.weight / linear2.weight as tensors: after sparsify they are formats, and it
    raised "argument 'ffn_weight_1' must be Tensor, not CSC". The formats now make it take
    its module path, under no_grad and inference_mode, with and without a padding mask."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True,
                                                           dropout=0.0), 2).eval()
    with torch.no_grad():
        for m in enc.modules():
            if type(m) is nn.Linear:
                m.weight.copy_(random_pattern_weight(*m.weight.shape, layout, density=0.1))
    x = torch.randn(3, 7, 32)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    want = {m: enc(x, src_key_padding_mask=m) for m in (None, pad)}
    sk.sparsify(enc, layout=layout)
    assert isinstance(enc.layers[0].linear1, sk.SparseLinear)
    for ctx in (torch.no_grad, torch.inference_mode, torch.enable_grad):
        for m in (None, pad):
            with ctx():
                got = enc(x, src_key_padding_mask=m)
            keep = ~pad.unsqueeze(-1).expand_as(got) if m is not None else torch.ones_like(
                got, dtype=torch.bool)
            assert rel_err(got[keep], want[m][keep]) < TOL[torch.float32], (ctx, m)


def test_a_format_given_to_a_torch_function_names_the_way_out():
    fmt = sk.to_sparse(random_pattern_weight(8, 16, "csc", density=0.2), layout="csc")
    with pytest.raises(TypeError, match=r"torch.linear got a sparsekern CSC format .*"
                                        r"sparsekern.linear"):
        torch.nn.functional.linear(torch.randn(2, 16), fmt)
    with pytest.raises(TypeError, match="sparsekern CSC format"):
        torch.add(fmt, 1)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_sparse_under_inference_mode_stays_trainable(tmp_path, suffix):
    """load_sparse built its layers as inference tensors under torch.inference_mode, while a
    dense model loaded there with load_state_dict trains afterwards."""
    torch.manual_seed(0)
    mk = lambda: nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    m = mk()
    with torch.no_grad():
        m[0].weight.copy_(random_pattern_weight(8, 16, "2:4"))
    sk.sparsify(m, layout="2:4")
    path = tmp_path / f"m{suffix}"
    sk.save_sparse(m, path)
    fresh = mk()
    with torch.inference_mode():
        sk.load_sparse(fresh, path)
    assert isinstance(fresh[0], sk.SparseLinear)
    assert not any(t.is_inference() for t in fresh.state_dict().values()
                   if isinstance(t, torch.Tensor))
    x = torch.randn(3, 16)
    fresh(x).sum().backward()
    assert fresh[0].values.grad is not None
    torch.testing.assert_close(fresh(x), m(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_sparse_layers_keep_the_train_eval_flag_of_the_layers_they_replace(tmp_path, suffix,
                                                                            mode):
    mk = lambda: nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Conv2d(1, 2, 3))
    m = mk()
    with torch.no_grad():
        m[0].weight.copy_(random_pattern_weight(8, 16, "2:4"))
        m[2].weight.copy_(random_pattern_weight(2, 9, "csc").reshape(2, 1, 3, 3))
    m.train(mode == "train")
    sk.sparsify(m, layout="csc", max_density=1.0)
    assert isinstance(m[0], sk.SparseLinear) and isinstance(m[2], sk.SparseConv2d)
    assert all(mod.training == (mode == "train") for mod in m.modules())
    path = tmp_path / f"m{suffix}"
    sk.save_sparse(m, path)
    fresh = mk().train(mode == "train")
    sk.load_sparse(fresh, path)
    assert isinstance(fresh[0], sk.SparseLinear)
    assert all(mod.training == (mode == "train") for mod in fresh.modules())
    alone = sk.SparseLinear.from_dense(nn.Linear(16, 8).eval(), layout="csc")
    assert not alone.training


@pytest.mark.parametrize("criterion", ["l1", "wanda"])
def test_a_layer_pruned_to_70_percent_per_row_is_packed_as_csc(criterion):
    """Wanda/SparseGPT prune per output row: a row of 1536 pruned to 70% keeps 461 entries
    (30.01%), over the default 0.3 limit by rounding, and stayed dense with layout='csc'."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(1536, 16))
    calib = [torch.randn(8, 1536)]
    prune.prune_model(m, 0.7, "fine", criterion=criterion, calib=calib)
    if criterion == "wanda":  # per row: 461 of 1536 in every row
        assert int((m[0].weight != 0).sum(1).max()) == 461
    sk.sparsify(m, layout="csc")
    assert isinstance(m[0], sk.SparseLinear), m.sparsekern_report
    # a layer clearly above the limit still stays dense
    d = nn.Sequential(nn.Linear(1536, 16))
    with torch.no_grad():
        d[0].weight.mul_((torch.rand_like(d[0].weight) < 0.32).float())
    sk.sparsify(d, layout="csc")
    assert type(d[0]) is nn.Linear


def test_one_module_under_two_names_is_pruned_once_and_left_dense_by_sparsify():
    """A layer shared across depth (self.b = self.a) is one module, not a tied weight: pruning
    prunes it (it was skipped as 'tied'), and sparsify leaves it dense with the reason (it
    advised untying it with a cloned weight, which would silently make two layers)."""
    from sparsekern import prune

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = self.a
            self.c = nn.Linear(16, 4)

        def forward(self, x):
            return self.c(self.b(torch.relu(self.a(x))))

    torch.manual_seed(0)
    model = Shared().eval()
    masks = prune.prune_model(model, 0.5, "2:4", criterion="wanda", calib=[torch.randn(3, 16)])
    assert sorted(masks) == ["a", "c"] and int((model.a.weight == 0).sum()) == 128
    x = torch.randn(2, 16)
    want = model(x)
    sparse = sk.sparsify(copy.deepcopy(model), layout="2:4")
    assert sparse.a is sparse.b and isinstance(sparse.a, nn.Linear)
    assert "one module registered under several names ('a', 'b')" in sparse.sparsekern_report["a"][1]
    assert isinstance(sparse.c, sk.SparseLinear)
    torch.testing.assert_close(sparse(x), want)


def test_sparsify_twice_reports_the_layers_already_packed():
    from sparsekern import prune
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    prune.prune_model(model, 0.5, "2:4")
    once = sk.sparsify(model, "2:4")
    assert {k: v[0] for k, v in once.sparsekern_report.items()} == {"0": "2:4", "2": "2:4"}
    twice = sk.sparsify(once, "2:4")  # it gave an empty report, and no word
    assert twice.sparsekern_report == {"0": ("2:4", "already packed"),
                                       "2": ("2:4", "already packed")}


@pytest.mark.parametrize("layout", ["2:4", "csc", "bsr"])
def test_sparse_linear_names_a_bias_of_the_wrong_kind(layout):
    """A list bias raised AttributeError ('list' object has no attribute 'shape'), an integer
    one torch's "Only Tensors of floating point ... can require gradients", and a bias on
    another device waited for the first forward."""
    W = random_pattern_weight(6, 12, layout, density=0.4, blocksize=(2, 2))
    A = sk.to_sparse(W, layout, blocksize=(2, 2) if layout == "bsr" else None)
    with pytest.raises(TypeError, match=r"bias must be a torch.Tensor of shape \[6\] or None, "
                                        r"got list"):
        sk.SparseLinear(A, [0.0] * 6)
    with pytest.raises(TypeError, match=r"bias has dtype torch.int64; expected a floating"):
        sk.SparseLinear(A, torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"bias is on meta but the weight is on cpu"):
        sk.SparseLinear(A, torch.zeros(6, device="meta"))
    bias = torch.randn(6)
    layer = sk.SparseLinear(A, bias)  # a good bias: the reference backend's product
    x = torch.randn(3, 12)
    with sk.use_backend("reference"):
        want = sk.linear(x, A, bias)
    torch.testing.assert_close(layer(x), want)


@pytest.mark.parametrize("layout", ["2:4", "auto"])
def test_sparsify_refuses_an_empty_layers_as_prune_model_does(layout):
    # sparsify(layers=[]) packed nothing, with an empty report and no warning
    model = nn.Sequential(nn.Linear(32, 32))
    prune.prune_model(model, granularity="2:4")
    for empty in ([], (), iter([])):
        with pytest.raises(ValueError, match=r"layers is empty: name at least one nn\.Linear, "
                                             r"nn\.Conv2d \(groups=1\) or transformers Conv1D "
                                             r"to sparsify, or pass layers=None for every one"):
            sk.sparsify(model, layout=layout, layers=empty)
        with pytest.raises(ValueError, match=r"layers is empty: name at least one"):
            prune.convert(model, layout="2:4", layers=empty)
    assert type(model[0]) is nn.Linear
    # a one-shot iterator of names is read once
    x = torch.randn(3, 32)
    ref = model(x)
    sk.sparsify(model, layout="2:4", layers=iter(["0"]))
    assert isinstance(model[0], sk.SparseLinear) and list(model.sparsekern_report) == ["0"]
    assert rel_err(model(x), ref) < TOL[torch.float32]


def test_sparsify_in_steps_keeps_every_layers_decision_in_the_report():
    """sparsify(layers=...) called layer by layer: the report holds every call's decisions
    (it held only the last call's layers)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 8))
    with torch.no_grad():
        for i in (0, 2):
            model[i].weight[torch.rand_like(model[i].weight) < 0.9] = 0
    model = sk.sparsify(model, layout="csc", layers=["0"])
    first = model.sparsekern_report["0"]
    model = sk.sparsify(model, layout="bsr", layers=["2"], blocksize=(8, 8), max_density=1.0)
    with pytest.warns(UserWarning):  # a dense 32x8 layer is not packed as csc
        model = sk.sparsify(model, layout="csc", layers=["4"])
    report = model.sparsekern_report
    assert set(report) == {"0", "2", "4"}
    assert report["0"] == first and report["0"][0] == "csc" and report["2"][0] == "bsr"
    assert report["4"][0] == "dense"
    model = sk.sparsify(model, layout="csc")  # every layer in scope: this call's word
    assert model.sparsekern_report["0"] == ("csc", "already packed")


def test_blocksize_with_a_layout_that_ignores_it_is_refused_and_BMxBK_is_accepted():
    model = torch.nn.Sequential(torch.nn.Linear(32, 32))
    with torch.no_grad():
        model[0].weight[:, :16] = 0
    for layout in ("2:4", "csc"):
        with pytest.raises(ValueError, match=rf"blocksize applies to a blocked layout \('bsr'\); "
                                             rf"got blocksize=\(16, 16\) with layout='{layout}', "
                                             rf"which would ignore it"):
            sk.sparsify(copy.deepcopy(model), layout=layout, blocksize=(16, 16))
    with pytest.raises(ValueError, match=r"blocksize applies to a blocked layout"):
        prune.convert(copy.deepcopy(model), layout="2:4", blocksize=(16, 16))
    packed = sk.sparsify(copy.deepcopy(model), layout="bsr", blocksize="16x16")
    # 16x16 blocks store the 512 non-zeros; the default 32x32 would store all 1024
    assert packed[0].layout == "bsr" and "nnz=512," in packed[0].extra_repr()
    x = torch.randn(3, 32)
    torch.testing.assert_close(packed(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"blocksize must be two positive integers \(bm, bk\) "
                                         r"or a 'BMxBK' string such as '16x16', got '16by16'"):
        sk.sparsify(copy.deepcopy(model), layout="bsr", blocksize="16by16")
