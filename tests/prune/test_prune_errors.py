"""Every rejection of the pruning frontend, with its message."""
import copy
import warnings

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.prune import SensitivityTable

from .models import CNN, MLP


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MLP((32, 16))


# -- granularity / criterion ---------------------------------------------------------------

@pytest.mark.parametrize("spec", ["diagonal", 3, (1, 2, 3), "2x", None])
def test_unknown_granularity(model, spec):
    with pytest.raises(ValueError, match=r"unknown granularity .*; expected 'fine', 'N:M' \(e\.g\. "
                                         r"'2:4', '1:4', '2:8'\), \(bm, bk\) or 'BMxBK' blocks, "
                                         r"'kernel', 'channel'"):
        prune.prune_model(model, 0.5, spec)


@pytest.mark.parametrize("spec,msg", [
    ("4:2", r"granularity '4:2': N:M needs 1 <= N < M, got N=4, M=2"),
    ("0:4", r"granularity '0:4': N:M needs 1 <= N < M, got N=0, M=4"),
    ((0, 4), r"block granularity needs positive \(bm, bk\), got \(0, 4\)"),
    ("0x8", r"block granularity needs positive \(bm, bk\), got '0x8'")])
def test_bad_granularity_numbers(model, spec, msg):
    with pytest.raises(ValueError, match=msg):
        prune.prune_model(model, 0.5, spec)


def test_unknown_criterion(model):
    with pytest.raises(ValueError, match=r"unknown criterion 'magnitude'; expected one of \['l1', "
                                         r"'l2', 'wanda', 'sparsegpt', 'bn_scale', 'apoz', "
                                         r"'regression'\]"):
        prune.prune_model(model, 0.5, criterion="magnitude")


def test_channel_criterion_on_weights_and_back(model):
    with pytest.raises(ValueError, match=r"criterion 'apoz' does not apply to weight-level "
                                         r"granularities .*; use one of \['l1', 'l2', 'wanda', "
                                         r"'sparsegpt'\]"):
        prune.prune_model(model, 0.5, "fine", "apoz")
    with pytest.raises(ValueError, match=r"criterion 'wanda' does not apply to granularity "
                                         r"'channel'; use one of \['l1', 'l2', 'bn_scale', "
                                         r"'apoz', 'regression'\]"):
        prune.channel_prune(model, 0.5, torch.zeros(1, 64), criterion="wanda")


# -- ratios ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan")])
def test_ratio_outside_0_1(model, ratio):
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\) \(the fraction of weights "
                                         r"removed\), got"):
        prune.prune_model(model, ratio)


def test_ratio_of_a_layer_outside_0_1_names_the_layer(model):
    with pytest.raises(ValueError, match=r"ratio for layer 'fc2' must be in \[0, 1\) .* got 1\.0"):
        prune.prune_model(model, {"fc1": 0.5, "fc2": 1.0})
    with pytest.raises(ValueError, match=r"ratio for layer 'fc1' must be in \[0, 1\) .* got 2"):
        prune.channel_prune(model, {"fc1": 2}, torch.zeros(1, 64))


def test_ratio_not_a_number(model):
    with pytest.raises(TypeError, match=r"ratio must be a number in \[0, 1\), got '0\.5'"):
        prune.prune_model(model, "0.5")


def test_ratio_missing(model):
    with pytest.raises(ValueError, match=r"ratio is required for this granularity"):
        prune.prune_model(model)
    with pytest.raises(ValueError, match=r"ratio has no entry for layer\(s\) \['fc3'\]"):
        prune.prune_model(model, {"fc1": 0.5, "fc2": 0.5}, layers=["fc1", "fc2", "fc3"])
    with pytest.raises(ValueError, match=r"ratio is required for channel pruning"):
        prune.channel_prune(model, None, torch.zeros(1, 64))


def test_n_m_ratio_contradiction(model):
    with pytest.raises(ValueError, match=r"ratio 0\.8 for layer 'fc1' contradicts granularity "
                                         r"'2:4', which removes exactly 0\.5; leave ratio=None"):
        prune.prune_model(model, 0.8, "2:4")
    prune.prune_model(model, 0.5, "2:4")  # the implied ratio is fine


def test_n_m_on_a_layer_whose_k_is_too_small():
    m = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(ValueError, match=r"layer '0': granularity '2:4' needs at least 4 input "
                                         r"weights per output \(K = in_features\), but K=3; "
                                         r"exclude this layer \(layers=\.\.\.\) or use 'fine'"):
        prune.prune_model(m, granularity="2:4")
    with pytest.raises(ValueError, match=r"layer '2': granularity '2:8' needs at least 8 input "
                                         r"weights per output"):
        prune.prune_model(m, granularity="2:8", layers=["2"])
    c = nn.Sequential(nn.Conv2d(1, 4, 1))
    with pytest.raises(ValueError, match=r"layer '0': granularity '1:4' needs at least 4 input "
                                         r"weights per output \(K = in_channels/groups\*kh\*kw\), "
                                         r"but K=1"):
        prune.prune_model(c, granularity="1:4")


# -- layers ----------------------------------------------------------------------------------

def test_model_with_no_prunable_layers():
    with pytest.raises(ValueError, match=r"model Sequential has no prunable layers: expected at "
                                         r"least one nn\.Linear or nn\.Conv2d"):
        prune.prune_model(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), 0.5)
    with pytest.raises(ValueError, match=r"model MLP has no prunable layers: expected at least one "
                                         r"nn\.Conv2d \(kernel granularity\)"):
        prune.prune_model(MLP(), 0.5, "kernel")
    with pytest.raises(TypeError, match=r"model must be an nn\.Module, got Tensor"):
        prune.prune_model(torch.zeros(3), 0.5)

    class FusedLinear(nn.Linear):  # as Falcon's FalconLinear
        pass
    # The message names why the linear-like layers it has are left out (it listed them as
    # if they were not nn.Linear at all).
    with pytest.raises(ValueError, match=r"its layers are: FusedLinear x2; left out: "
                                         r"FusedLinear \(FusedLinear subclasses nn\.Linear; only "
                                         r"nn\.Linear itself is swapped"):
        prune.prune_model(nn.Sequential(FusedLinear(4, 4), nn.ReLU(), FusedLinear(4, 4)), 0.5)


def test_unknown_or_unprunable_layer_names():
    with pytest.raises(ValueError, match=r"layer 'fc9' does not exist in MLP; prunable layers are "
                                         r"\['fc1', 'fc2', 'fc3'\]"):
        prune.prune_model(MLP(), 0.5, layers=["fc9"])
    with pytest.raises(ValueError, match=r"layer 'bn1' is a BatchNorm2d; only nn\.Linear and "
                                         r"nn\.Conv2d can be pruned"):
        prune.prune_model(CNN(), 0.5, layers=["bn1"])
    with pytest.raises(ValueError, match=r"layer 'fc1' is a Linear; kernel granularity prunes "
                                         r"whole kh x kw kernels of an nn\.Conv2d"):
        prune.prune_model(CNN(), 0.5, "kernel", layers=["conv1", "fc1"])
    with pytest.raises(ValueError, match=r"layers is empty"):
        prune.prune_model(MLP(), 0.5, layers=[])


def test_scope(model):
    with pytest.raises(ValueError, match=r"scope must be one of \('layer', 'global'\), got 'net'"):
        prune.prune_model(model, 0.5, scope="net")
    with pytest.raises(ValueError, match=r"scope='global' needs granularity 'fine', criterion 'l1' "
                                         r"or 'l2' and one ratio for all layers"):
        prune.prune_model(model, 0.5, (1, 4), scope="global")


# -- calibration -----------------------------------------------------------------------------

def test_calibration_required(model):
    with pytest.raises(ValueError, match=r"criterion 'wanda' needs calibration data "
                                         r"\(calib=\.\.\.\)"):
        prune.prune_model(model, 0.5, criterion="wanda")
    for crit in ("apoz", "regression"):
        with pytest.raises(ValueError, match=rf"criterion '{crit}' needs calibration data"):
            prune.channel_prune(model, 0.5, torch.zeros(1, 64), criterion=crit)
    with pytest.raises(ValueError, match=r"channel pruning needs example_input \(one batch of "
                                         r"model inputs\) or calib"):
        prune.channel_prune(model, 0.5)


def test_calibration_of_the_wrong_shape_names_the_layer(model):
    with pytest.raises(ValueError, match=r"calib batch 1 has shape \[8, 32\], which does not fit "
                                         r"layer 'fc1' \(Linear\): its input has shape \[8, 32\]; "
                                         r"expected \[\.\.\., 64\]"):
        prune.prune_model(model, 0.5, criterion="wanda", calib=[torch.zeros(8, 64),
                                                                 torch.zeros(8, 32)])
    cnn = CNN()
    with pytest.raises(ValueError, match=r"calib batch 0 has shape \[4, 1, 6, 6\], which does not "
                                         r"fit the model CNN: the input of layer 'conv2' has shape "
                                         r"\[4, 16, 6, 6\]; expected \['N', 16, 8, 8\] as traced"):
        prune.channel_prune(cnn, 0.5, torch.zeros(2, 1, 8, 8), criterion="apoz",
                            calib=torch.zeros(4, 1, 6, 6))
    with pytest.raises(ValueError, match=r"example_input of shape \[2, 3, 8, 8\] does not fit "
                                         r"layer 'conv1'"):
        prune.channel_prune(cnn, 0.5, torch.zeros(2, 3, 8, 8))


def test_calibration_of_the_wrong_kind(model):
    with pytest.raises(ValueError, match=r"calib is empty"):
        prune.prune_model(model, 0.5, criterion="wanda", calib=[])
    with pytest.raises(TypeError, match=r"calib batch 0 is a str; expected a tensor "
                                        r"\(model\(x\)\), a Mapping"):
        prune.prune_model(model, 0.5, criterion="wanda", calib=["x"])
    with pytest.raises(TypeError, match=r"calib must be one batch or an iterable of batches "
                                        r"\(a list, a DataLoader\), got int"):
        prune.prune_model(model, 0.5, criterion="wanda", calib=3)


_ITEM_KINDS = {  # every calibration item kind, holding the batch x
    "tensor": lambda x: x,
    "pair": lambda x: (x, torch.zeros(x.shape[0])),
    "mapping": lambda x: {"input": x},  # nn.Sequential.forward(input)
    "args": lambda x: sk.Args(x),
}


def _calibrate(criterion, calib):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    if criterion == "sensitivity":
        return prune.sensitivity_scan(m, lambda m: 1.0, [0.5], criterion="wanda", calib=calib,
                                      progress=False, warn=False)
    if criterion in ("apoz", "regression"):
        return prune.channel_prune(m, 0.5, criterion=criterion, calib=calib)
    return prune.prune_model(m, 0.5, criterion=criterion, calib=calib)


@pytest.mark.parametrize("kind", list(_ITEM_KINDS))
@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt", "apoz", "regression",
                                       "sensitivity"])
def test_calibration_of_the_wrong_dtype_names_the_dtypes(criterion, kind):
    # was "calib batch 0 has shape [6, 8], which does not fit layer '0' (Linear)": the shape
    # was right, the dtype was not
    item = _ITEM_KINDS[kind]
    good = item(torch.randn(6, 8))
    for i, calib in enumerate([[item(torch.randn(6, 8, dtype=torch.float64))],
                               [good, item(torch.randn(6, 8, dtype=torch.float64))]]):
        with pytest.raises(ValueError, match=rf"calib batch {i} has dtype torch\.float64 "
                                             r"\(shape .*\[6, 8\].*\), but the model's parameters "
                                             r"are torch\.float32; expected torch\.float32 inputs"):
            _calibrate(criterion, calib)


@pytest.mark.parametrize("kind", list(_ITEM_KINDS))
@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt", "apoz", "regression",
                                       "sensitivity"])
def test_calibration_batch_of_0_rows_names_the_batch(criterion, kind):
    # was a confusing downstream error ("saw no real token ... is the attention_mask all 0")
    # or, with a good batch beside it, silently nothing
    item = _ITEM_KINDS[kind]
    for i, calib in enumerate([[item(torch.zeros(0, 8))],
                               [item(torch.randn(6, 8)), item(torch.zeros(0, 8))]]):
        with pytest.raises(ValueError, match=rf"calib batch {i} has shape .*\[0, 8\].*, which "
                                             r"holds no data \(a dimension of size 0\); "
                                             r"expected at least one row in every batch"):
            _calibrate(criterion, calib)


def test_empty_or_wrong_dtype_example_input_is_named():
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match=r"example_input has shape \[0, 8\], which holds no "
                                         r"data"):
        prune.channel_prune(m, 0.5, torch.zeros(0, 8))
    with pytest.raises(ValueError, match=r"example_input has dtype torch\.float64 \(shape "
                                         r"\[2, 8\]\), but the model's parameters are "
                                         r"torch\.float32"):
        prune.channel_prune(m, 0.5, torch.zeros(2, 8, dtype=torch.float64))


# -- channel pruning -------------------------------------------------------------------------

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.fc(x)
        return x


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = y + self.b(y)  # residual: a's and b's channels are coupled
        y = torch.relu(self.c(y))
        return self.head(y.mean((2, 3)))


def test_untraceable_model_is_an_error():
    with pytest.raises(ValueError, match=r"channel pruning traces the model with torch\.fx, which "
                                         r"could not trace Branchy: TraceError"):
        prune.channel_prune(Branchy(), 0.5, torch.ones(1, 4))


def test_untraced_dependencies_are_reported_and_warned():
    m = Residual()
    x = torch.randn(2, 3, 6, 6)
    with pytest.warns(UserWarning, match=r"channel pruning left these layers alone: a: add "
                                         r"combines it with another tensor \(e\.g\. a residual "
                                         r"connection\)"):
        report = prune.channel_prune(m, 0.5, x)
    assert set(report.pruned) == {"c"}  # through the spatial mean into head
    assert report.skipped["b"].startswith("add combines it with another tensor")
    assert report.skipped["head"] == "its channels reach the model output"
    assert m(x).shape == (2, 2) and m.head.in_features == 4
    with pytest.raises(ValueError, match=r"layer 'a' cannot be channel-pruned: add combines it"):
        prune.channel_prune(Residual(), 0.5, x, layers=["a"])


def test_nothing_channel_prunable():
    with pytest.raises(ValueError, match=r"model Sequential has no channel-prunable layers: 0: its "
                                         r"channels reach the model output"):
        prune.channel_prune(nn.Sequential(nn.Linear(4, 4)), 0.5, torch.zeros(1, 4))


def test_other_unfollowable_uses_are_reported():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(8, 2)
            self.norm = nn.LayerNorm(4)
            self.c = nn.Linear(4, 4)

        def forward(self, x):
            return self.b(torch.cat([self.a(x), self.norm(self.c(x))], 1))

    with pytest.raises(ValueError, match=r"no channel-prunable layers: a: it is used by cat, which "
                                         r"sparsekern cannot follow; c: it feeds norm "
                                         r"\(LayerNorm\), which sparsekern cannot follow; b: its "
                                         r"channels reach the model output"):
        prune.channel_prune(Cat(), 0.5, torch.zeros(2, 4))


# -- masks, schedule, sensitivity, trainer, convert ------------------------------------------

def test_bad_masks(model):
    with pytest.raises(ValueError, match=r"mask for layer 'fc1' has shape \[3\]; expected the "
                                         r"weight's shape \[32, 64\]"):
        prune.apply_masks(model, {"fc1": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask for layer 'fc7': MLP has no layer of that name "
                                         r"with a weight"):
        prune.MaskHolder(model, {"fc7": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TypeError, match=r"masks must be a dict \{layer name: bool tensor\}, got "
                                        r"list"):
        prune.prune_model(model, 0.5, masks=[])


def test_masks_of_soft_values_are_rejected_and_0_1_masks_of_any_dtype_work(model):
    # a float mask of scores (0.5, 0.3) was read as "nonzero = kept": every weight kept, with
    # no word (torch.nn.utils.prune's float 0/1 weight_mask is fine)
    keep = prune.prune_model(copy.deepcopy(model), 0.5, apply=False)
    soft = {n: k.float() * 0.5 for n, k in keep.items()}
    for call in (lambda m: prune.apply_masks(m, soft), lambda m: prune.MaskHolder(m, soft),
                 lambda m: prune.prune_model(m, 0.6, masks=soft)):
        m = copy.deepcopy(model)
        with pytest.raises(ValueError, match=r"mask for layer 'fc1' has dtype torch.float32 with "
                                             r"values other than 0 and 1 \(e.g. 0.5\); expected a "
                                             r"bool mask \(True = kept\) or one of 0s and 1s"):
            call(m)
        x = torch.randn(3, 64)
        assert torch.equal(m(x), model(x))  # nothing applied
    x = torch.randn(3, 64)
    for kind in (torch.float32, torch.int64, torch.uint8):
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        prune.apply_masks(a, {n: k.to(kind) for n, k in keep.items()})
        prune.apply_masks(b, keep)
        assert torch.equal(a(x), b(x)), kind


def test_masks_of_the_plain_model_for_a_compiled_one_say_so(model):
    # torch.compile(model) names its layers '_orig_mod.fc1': the masks of the plain model
    # were "no layer of that name", with no word of the wrapper
    masks = prune.prune_model(copy.deepcopy(model), 0.5, apply=False)
    compiled = torch.compile(copy.deepcopy(model), backend="eager")
    with pytest.raises(ValueError, match=r"mask for layer 'fc1': OptimizedModule has no layer of "
                                         r"that name with a weight; it is a torch\.compile "
                                         r"wrapper, whose layers are named '_orig_mod\.<name>': "
                                         r"use the masks with the model it wraps "
                                         r"\(model\._orig_mod\)"):
        prune.MaskHolder(compiled, masks)
    held = prune.MaskHolder(compiled._orig_mod, masks)  # as the message says
    held.apply()
    ref = copy.deepcopy(model)
    prune.apply_masks(ref, masks)
    x = torch.randn(3, 64)
    assert torch.equal(compiled(x), ref(x))


def test_pruning_a_sparsified_model_says_its_layers_are_packed(model):
    # "has no prunable layers ... its layers are: SparseLinear x3" and "is a SparseLinear;
    # only nn.Linear ... can be pruned" did not say what to do
    prune.prune_model(model, 0.9)
    dense = copy.deepcopy(model)
    sparse = sk.sparsify(copy.deepcopy(model), layout="csc")
    hint = (r"packed by sparsekern\.sparsify: prune the dense model before sparsify, or unpack "
            r"a layer with layer\.to_dense\(\)")
    with pytest.raises(ValueError, match=r"model MLP has no prunable layers: .*SparseLinear x3; "
                                         r"its 3 SparseLinear layers are " + hint):
        prune.prune_model(sparse, 0.95)
    with pytest.raises(ValueError, match=r"layer 'fc1' is a SparseLinear; only nn\.Linear and "
                                         r"nn\.Conv2d can be pruned \(and transformers Conv1D\): "
                                         r"it is " + hint):
        prune.prune_model(sparse, 0.95, layers=["fc1"])
    x = torch.randn(4, 64)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)  # unchanged
    sparse.fc1 = sparse.fc1.to_dense()  # as the message says: fc1 prunes again
    prune.prune_model(sparse, 0.95, layers=["fc1"])
    assert prune.sparsity(sparse)["fc1"] > 0.94


def test_bad_schedules(model):
    with pytest.raises(ValueError, match=r"schedule must not decrease \(pruned weights stay "
                                         r"pruned\), got \[0\.5, 0\.3\]"):
        prune.iterative_prune(model, [0.5, 0.3])
    with pytest.raises(ValueError, match=r"schedule is empty"):
        prune.iterative_prune(model, [])
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        prune.iterative_prune(model, [0.5, 1.0])
    with pytest.raises(ValueError, match=r"iterative_prune needs a granularity that takes a ratio "
                                         r"\(fine, blocks, kernel\); got '2:4'"):
        prune.iterative_prune(model, [0.5], granularity="2:4")


def test_bad_sensitivity_arguments(model):
    with pytest.raises(ValueError, match=r"sensitivity_scan sweeps ratios; granularity '2:4' fixes "
                                         r"its ratio"):
        prune.sensitivity_scan(model, lambda m: 1.0, granularity="2:4", progress=False)
    with pytest.raises(TypeError, match=r"eval_fn must be callable as eval_fn\(model\) -> float, "
                                        r"got float"):
        prune.sensitivity_scan(model, 1.0, progress=False)
    with pytest.raises(ValueError, match=r"ratios is empty"):
        prune.sensitivity_scan(model, lambda m: 1.0, ratios=[], progress=False)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        prune.sensitivity_scan(model, lambda m: 1.0, ratios=[0.5, 1.2], progress=False)
    table = SensitivityTable([0.5], 1.0, {"fc1": [1.0]})
    with pytest.raises(ValueError, match=r"max_drop must be a non-negative number \(in the "
                                         r"metric's units\), got -0\.1"):
        prune.ratios_from_sensitivity(table, -0.1)
    with pytest.raises(TypeError, match=r"table must be a SensitivityTable from sensitivity_scan, "
                                        r"got dict"):
        prune.ratios_from_sensitivity({}, 0.1)


def test_bad_training_arguments(model):
    data = [(torch.zeros(2, 64), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ValueError, match=r"epochs must be a non-negative int, got -1"):
        prune.fine_tune(model, data, epochs=-1, progress=False)
    with pytest.raises(ValueError, match=r"lr must be positive, got 0"):
        prune.train(model, data, lr=0, progress=False)
    with pytest.raises(ValueError, match=r"each batch of the loader must be an \(inputs, targets\) "
                                         r"pair or a Mapping of the model's arguments with the targets under 'labels', "
                                         r"got Tensor"):
        prune.train(model, [torch.zeros(2, 64)], progress=False)
    with pytest.raises(ValueError, match=r"the loader yielded no samples"):
        prune.accuracy(model, [])
    with pytest.raises(ValueError, match=r"model MLP has no BatchNorm with an affine weight"):
        prune.bn_l1_penalty(model)


def test_targets_that_do_not_fit_the_default_loss_are_named(model):
    # a language model's logits [B, T, V] with token targets [B, T] failed inside
    # cross_entropy with "Expected target size [2, 50], got [2, 12]"
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(50, 16), nn.Linear(16, 50)

        def forward(self, ids):
            return self.head(self.emb(ids))

    torch.manual_seed(0)
    lm = Tokens()
    ref = copy.deepcopy(lm)
    ids = torch.randint(0, 50, (2, 12))
    with pytest.raises(ValueError, match=r"the model's output has shape \[2, 12, 50\] and the "
                                         r"targets \[2, 12\]; the default loss, cross entropy, "
                                         r"needs targets \[2, 50\] \(class indices of \[batch, "
                                         r"classes, \.\.\.\] outputs\) or \[2, 12, 50\] \(class "
                                         r"probabilities\): pass loss_fn= for other outputs"):
        prune.train(lm, [(ids, ids)], progress=False)
    assert torch.equal(lm(ids), ref(ids))  # no step taken
    # targets that fit still train: [batch, classes, d] logits with [batch, d] targets
    seg = nn.Conv1d(4, 3, 1)
    losses = prune.train(seg, [(torch.randn(2, 4, 5), torch.randint(0, 3, (2, 5)))],
                         progress=False)
    assert len(losses) == 1
    flat = lambda out, y: nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())  # noqa
    assert len(prune.train(lm, [(ids, ids)], loss_fn=flat, progress=False)) == 1


def test_bad_convert_arguments(model):
    with pytest.raises(ValueError, match=r"layout must be 'auto', '1:4', '2:4', 'bsr', 'csc' or 'sell'; "
                                         r"got 'coo'"):
        prune.convert(model, layout="coo")
    with pytest.raises(ValueError, match=r"max_density must be in \[0, 1\], got 2"):
        prune.convert(model, layout="csc", max_density=2)


def test_global_pooling_in_function_form_is_followed():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(torch.mean(torch.relu(self.a(x)) * 0.5, dim=(2, 3)))

    m = Net()
    report = prune.channel_prune(m, 0.5, torch.randn(2, 3, 6, 6))
    assert report.pruned["a"].consumers == ["head"] and m.head.in_features == 4
    with pytest.raises(ValueError, match=r"layer 'a' cannot be channel-pruned: a sum reduces over "
                                         r"its channels"):
        class Bad(Net):
            def forward(self, x):
                return self.head(torch.relu(self.a(x)).sum(1).flatten(1)[:, :8])
        prune.channel_prune(Bad(), 0.5, torch.randn(2, 3, 6, 6), layers=["a"])


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_data_is_rejected_naming_the_layer(criterion, bad):
    # NaN input norms sorted as the largest: Wanda kept those columns and pruned the rest
    # from arbitrary scores, with no error; SparseGPT blamed too little calibration data.
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    before = [p.detach().clone() for p in m.parameters()]
    x = torch.randn(8, 16)
    x[2, 5] = bad
    msg = (r"layer '0': its calibration inputs hold NaN or Inf \(input column 5" if
           criterion == "wanda" else r"layer '0': the calibration Hessian \(16x16\) holds NaN "
                                     r"or Inf: the layer's calibration inputs hold NaN or Inf")
    with pytest.raises(ValueError, match=msg):
        prune.prune_model(m, 0.5, criterion=criterion, calib=x)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # nothing pruned


# -- arguments the criterion / granularity would ignore ------------------------------------

def test_a_sparsegpt_config_without_criterion_sparsegpt_is_refused(model):
    x = torch.randn(128, 64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for crit in ("l1", "l2", "wanda"):
        with pytest.raises(ValueError, match=rf"sparsegpt=SparseGPTConfig\(damp=0\.5, "
                                             rf"blocksize=128\) applies to criterion 'sparsegpt' "
                                             rf"only; got criterion '{crit}', which would ignore "
                                             rf"it: drop sparsegpt=\.\.\. or use "
                                             rf"criterion='sparsegpt'"):
            prune.prune_model(model, 0.5, criterion=crit, calib=x,
                              sparsegpt=prune.SparseGPTConfig(damp=0.5))
    with pytest.raises(TypeError, match=r"sparsegpt must be a SparseGPTConfig or None, got dict"):
        prune.prune_model(model, 0.5, criterion="sparsegpt", calib=x, sparsegpt={"damp": 0.1})
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # untouched


@pytest.mark.parametrize("gran,name", [("fine", "fine"), ("2:4", "2:4"), ((4, 4), "4x4")])
def test_example_input_without_channel_granularity_is_refused(model, gran, name):
    with pytest.raises(ValueError, match=rf"example_input applies to granularity 'channel' "
                                         rf"only \(it traces the model's shapes\); granularity "
                                         rf"'{name}' would ignore it: drop example_input=\.\.\."):
        prune.prune_model(model, None if gran == "2:4" else 0.5, gran,
                          example_input=torch.randn(2, 64))


@pytest.mark.parametrize("crit,gran", [("l1", "fine"), ("l2", (4, 4)), ("l1", "channel")])
def test_calib_for_a_criterion_that_reads_none_is_warned_about(model, crit, gran):
    # a warning, not an error: auto.netadapt / auto.amc pass their calib through
    x = torch.randn(8, 64)
    kw = {"example_input": x} if gran == "channel" else {}
    with pytest.warns(UserWarning, match=rf"calib is not used by criterion '{crit}' \(weights "
                                         rf"are scored without data\); only \['wanda', "
                                         rf"'sparsegpt', 'apoz', 'regression'\] read calibration "
                                         rf"data: drop calib=\.\.\. or use one of them"):
        prune.prune_model(copy.deepcopy(model), 0.5, gran, crit, calib=x, **kw)
    with warnings.catch_warnings():  # channel traces with calib when example_input is None
        warnings.simplefilter("error")
        prune.prune_model(copy.deepcopy(model), 0.5, "channel", "l1", calib=x)
        prune.prune_model(copy.deepcopy(model), 0.5, "fine", "wanda", calib=x)


def test_schedules_and_scans_warn_once_about_unread_calib_at_the_callers_line(model):
    x = torch.randn(8, 64)
    runs = {"iterative_prune": lambda m: prune.iterative_prune(m, (0.3, 0.5), calib=x,
                                                               progress=False),
            "sensitivity_scan": lambda m: prune.sensitivity_scan(m, lambda _: 1.0,
                                                                 ratios=[0.3, 0.5], calib=x,
                                                                 progress=False)}
    for name, run in runs.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(copy.deepcopy(model))
        said = [w for w in caught if "calib is not used" in str(w.message)]
        assert len(said) == 1 and said[0].filename == __file__, (name, said)


@pytest.mark.parametrize("arg,value,shown", [("masks", {}, "dict"), ("apply", False, "False"),
                                             ("scope", "global", "'global'"),
                                             ("sequential", True, "True")])
def test_weight_level_arguments_for_channel_granularity_are_refused(model, arg, value, shown):
    with pytest.raises(ValueError, match=rf"{arg}={shown} does not apply to granularity "
                                         rf"'channel' \(channels are removed in place; it would "
                                         rf"be ignored\): leave {arg} at "):
        prune.prune_model(model, 0.5, "channel", example_input=torch.randn(2, 64),
                          **{arg: value})
    assert model.fc1.out_features == 32  # nothing removed


# ----------------------------------------------------------------------------- channel surgery: all or nothing

class _TwoBlocks(nn.Module):
    """a -> bna -> c -> bn -> c2: two channel groups (a, c), BatchNorm ``bn`` affine or not."""

    def __init__(self, affine=True):
        super().__init__()
        self.a, self.bna = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
        self.c, self.bn = nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8, affine=affine)
        self.c2 = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        x = torch.relu(self.bna(self.a(x)))
        return self.c2(torch.relu(self.bn(self.c(x))))


def _channel_state(m):
    return {k: (v.shape, v.clone()) for k, v in m.state_dict().items()}


def _assert_unchanged(m, before):
    after = _channel_state(m)
    assert after.keys() == before.keys()
    for k, (shape, v) in before.items():
        assert after[k][0] == shape, k
        assert torch.equal(after[k][1], v), k
    assert (m.a.out_channels, m.c.in_channels, m.c.out_channels, m.bn.num_features,
            m.c2.in_channels) == (8, 8, 8, 8, 8)


def test_bn_scale_skips_a_batchnorm_without_gamma():
    """BatchNorm2d(affine=False) has no weight: AttributeError midway, 'a' already shrunk."""
    torch.manual_seed(0)
    m = _TwoBlocks(affine=False).eval()
    with pytest.warns(UserWarning, match=r"c: its BatchNorm bn has no scale \(affine=False\)"):
        report = prune.channel_prune(m, 0.5, torch.randn(2, 3, 16, 16), criterion="bn_scale")
    assert set(report.pruned) == {"a"} and m.a.out_channels == 4 and m.c.in_channels == 4
    assert report.skipped["c"] == "its BatchNorm bn has no scale (affine=False) (criterion " \
                                  "'bn_scale')"
    assert m.c.out_channels == 8 and m.bn.num_features == 8
    m2 = _TwoBlocks(affine=False).eval()
    before = _channel_state(m2)
    with pytest.raises(ValueError, match=r"layer 'c' cannot be channel-pruned: its BatchNorm bn "
                                         r"has no scale"):
        prune.channel_prune(m2, 0.5, torch.randn(2, 3, 16, 16), criterion="bn_scale",
                            layers=["a", "c"])
    _assert_unchanged(m2, before)


def test_a_ratio_missing_for_a_named_layer_refuses_before_any_surgery():
    """ratio={'a': ..} with layers=['a', 'c']: KeyError at 'c' after 'a' was shrunk."""
    m = _TwoBlocks().eval()
    before = _channel_state(m)
    with pytest.raises(ValueError, match=r"ratio has no entry for the layers \['c'\]"):
        prune.channel_prune(m, {"a": 0.5}, torch.randn(2, 3, 16, 16), layers=["a", "c"])
    _assert_unchanged(m, before)


def test_an_error_during_surgery_leaves_the_model_as_it_was(monkeypatch):
    """Any failure after the first group's surgery (e.g. a calibration batch of the regression
    criterion) restores every layer already changed."""
    from sparsekern.prune import channel
    m = _TwoBlocks().eval()
    before = _channel_state(m)
    real, calls = channel._remove_channels, []

    def failing_second(model, group, keep, refit=None):
        calls.append(group.producer)
        if len(calls) == 2:
            raise RuntimeError("boom")
        real(model, group, keep, refit)

    monkeypatch.setattr(channel, "_remove_channels", failing_second)
    with pytest.raises(RuntimeError, match="boom"):
        prune.channel_prune(m, 0.5, torch.randn(2, 3, 16, 16), warn=False)
    assert calls == ["a", "c"]
    _assert_unchanged(m, before)
    m(torch.randn(1, 3, 16, 16))  # still consistent
