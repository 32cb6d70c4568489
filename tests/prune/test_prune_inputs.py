"""Calibration on any model input item (sparsekern.inputs) and per-module train flags."""
import copy

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import inputs, prune

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from sparsekern.models.minilm import tiny_bert_encoder  # noqa: E402


def _batch(seed=0, b=4, t=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (b, t), generator=g)
    mask = torch.ones_like(ids)
    mask[0, t // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(8, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x, y, scale=1.0):
        return self.out(torch.relu(self.a(x) + self.b(y)) * scale)


def test_every_item_kind_calls_the_model_the_same_way():
    torch.manual_seed(0)
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    m = TwoInputs()
    ref = m(x, y, scale=2.0)
    assert torch.equal(inputs.call(m, sk.Args(x, y, scale=2.0)), ref)
    assert torch.equal(inputs.call(m, {"x": x, "y": y, "scale": 2.0}), ref)
    assert torch.equal(inputs.call(m, (sk.Args(x, y, scale=2.0), torch.zeros(5))), ref)
    lin = nn.Linear(8, 3)
    assert torch.equal(inputs.call(lin, x), lin(x))
    assert torch.equal(inputs.call(lin, [x, torch.zeros(5)]), lin(x))  # (inputs, targets)
    assert torch.equal(inputs.call(m, (x, y), tuple_is="args"), m(x, y))


def test_wanda_masks_are_the_same_for_every_item_kind():
    torch.manual_seed(0)
    m = TwoInputs()
    xs = [(torch.randn(6, 8), torch.randn(6, 8)) for _ in range(2)]
    kinds = {
        "args": [sk.Args(x, y) for x, y in xs],
        "mapping": [{"x": x, "y": y} for x, y in xs],
        "pair": [(sk.Args(x, y), torch.zeros(6)) for x, y in xs],
    }
    masks = {k: prune.prune_model(copy.deepcopy(m), 0.5, "fine", "wanda", calib=c)
             for k, c in kinds.items()}
    for k in ("mapping", "pair"):
        for n in masks["args"]:
            assert torch.equal(masks[k][n], masks["args"][n]), (k, n)
    lin = nn.Sequential(nn.Linear(8, 8))
    x = torch.randn(6, 8)
    a = prune.prune_model(copy.deepcopy(lin), 0.5, "fine", "wanda", calib=x)
    b = prune.prune_model(copy.deepcopy(lin), 0.5, "fine", "wanda", calib=[(x, torch.zeros(6))])
    assert torch.equal(a["0"], b["0"])


def test_tokenizer_output_calibrates_a_hugging_face_model():
    model = tiny_bert_encoder()
    batches = [_batch(0), _batch(1)]
    for crit in ("wanda", "sparsegpt"):
        m = copy.deepcopy(model)
        masks = prune.prune_model(m, 0.5, "fine", crit, calib=batches)
        assert len(masks) == 12  # 2 blocks x (q, k, v, attn out, intermediate, output)
        assert abs(prune.sparsity(m)["total"] - 0.5) < 1e-6
    # one dict on its own is one batch, not an iterable of its keys
    masks = prune.prune_model(copy.deepcopy(model), 0.5, "fine", "wanda", calib=_batch(0))
    assert len(masks) == 12


def test_unsupported_items_are_rejected_with_the_accepted_kinds():
    m = TwoInputs()
    with pytest.raises(TypeError, match=r"calib batch 1 is a str; expected a tensor "
                                        r"\(model\(x\)\), a Mapping such as a tokenizer's output "
                                        r"\(model\(\*\*item\)\), sparsekern.Args"):
        prune.prune_model(m, 0.5, "fine", "wanda", calib=[torch.randn(2, 8), "text"])
    with pytest.raises(TypeError, match=r"calib batch 0 is a tuple whose inputs are a tuple; "
                                        r"wrap several positional inputs in sparsekern.Args"):
        prune.prune_model(m, 0.5, "fine", "wanda",
                          calib=[((torch.randn(2, 8), torch.randn(2, 8)), torch.zeros(2))])
    with pytest.raises(TypeError, match=r"calib batch 0 is a Mapping with non-string keys \[0\]"):
        prune.prune_model(m, 0.5, "fine", "wanda", calib=[{0: torch.randn(2, 8)}])
    with pytest.raises(TypeError, match=r"calib batch 0 is a int; expected a tensor"):
        prune.prune_model(m, 0.5, "fine", "sparsegpt", calib=[3])


def test_a_mapping_that_does_not_fit_names_the_batch_and_the_layer():
    model = tiny_bert_encoder()
    bad = {"input_ids": torch.randint(0, 100, (2, 5)), "attention_mask": torch.ones(2, 5),
           "wrong_name": torch.ones(2, 5)}
    with pytest.raises(ValueError, match=r"calib batch 0 has shape \{'input_ids': \[2, 5\], "
                                         r"'attention_mask': \[2, 5\], 'wrong_name': \[2, 5\]\}, "
                                         r"which does not fit the model SentenceEncoder"):
        prune.prune_model(model, 0.5, "fine", "wanda", calib=bad)
    m = TwoInputs()
    with pytest.raises(ValueError, match=r"calib batch 0 has shape Args\(\[2, 8\], \[2, 7\]\), "
                                         r"which does not fit layer 'b' \(Linear\)"):
        prune.prune_model(m, 0.5, "fine", "sparsegpt",
                          calib=sk.Args(torch.randn(2, 8), torch.randn(2, 7)))


@pytest.mark.parametrize("convert,kind", [(lambda t: t.tolist(), "list"),
                                           (lambda t: t.numpy(), "ndarray")],
                         ids=["list", "ndarray"])
def test_a_tokenizer_output_without_tensors_names_the_key_and_return_tensors(convert, kind):
    # tokenizer(texts, padding=True) without return_tensors="pt" gives lists (or NumPy
    # arrays with "np"): the model failed on them with "'list' object has no attribute 'size'"
    model = tiny_bert_encoder()
    good = _batch(0)
    bad = {k: convert(v) for k, v in good.items()}
    msg = (rf"calib batch 1\['input_ids'\] is a {kind}; expected a tensor: call the tokenizer "
           rf"with return_tensors='pt'")
    m = copy.deepcopy(model)
    for crit in ("wanda", "sparsegpt"):
        with pytest.raises(TypeError, match=msg):
            prune.prune_model(m, 0.5, "fine", crit, calib=[good, bad])
    with pytest.raises(TypeError, match=r"data batch 0\['input_ids'\] is a " + kind):
        prune.distill(m, model, [bad], steps=1, progress=False)
    fresh = _batch(7)  # rejected before anything changed
    assert torch.equal(m(**fresh), model(**fresh))
    # other values (numbers, None, flags) in a Mapping are left to the model
    assert inputs.split({"x": torch.ones(1), "scale": 2.0, "y": None})[1]["scale"] == 2.0


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
def test_an_attention_mask_of_another_shape_than_the_input_ids_is_named(criterion):
    # Llama accepts a mask shorter than input_ids; calibration then could not match the mask
    # to the tokens and silently counted the padding too
    model = tiny_bert_encoder()
    good = _batch(0)
    bad = dict(_batch(1), attention_mask=_batch(1)["attention_mask"][:, :5])
    m = copy.deepcopy(model)
    with pytest.raises(ValueError, match=r"calib batch 1 has attention_mask of shape \[4, 5\] but "
                                         r"input_ids of shape \[4, 10\]; expected one mask entry "
                                         r"per token \(the tokenizer's output, unchanged\)"):
        prune.prune_model(m, 0.5, "fine", criterion, calib=[good, bad])
    fresh = _batch(5)
    assert torch.equal(m(**fresh), model(**fresh))


def test_a_dataloader_of_token_id_lists_names_the_key_and_the_fix():
    # a DataLoader over examples whose token ids are Python lists (a datasets.Dataset without
    # set_format("torch")) collates each key into a list of per-position 1-D tensors: the
    # model failed with "'list' object has no attribute 'size'"
    model = tiny_bert_encoder()
    examples = [{"input_ids": list(range(1, 9)), "attention_mask": [1] * 8} for _ in range(4)]
    batch = next(iter(torch.utils.data.DataLoader(examples, batch_size=2)))
    assert isinstance(batch["input_ids"], list)
    m = copy.deepcopy(model)
    with pytest.raises(TypeError, match=r"calib batch 0\['input_ids'\] is a list of 8 integer "
                                        r"tensors \[2\]; expected a tensor: a DataLoader "
                                        r"collates lists of token ids this way: give the dataset "
                                        r"tensors \(datasets: set_format\('torch'\)\) or a "
                                        r"collate_fn that pads \(DataCollatorWithPadding\)"):
        prune.prune_model(m, 0.5, "fine", "wanda", calib=[batch])
    fresh = _batch(3)
    assert torch.equal(m(**fresh), model(**fresh))
    stacked = {k: torch.stack(v, 1) for k, v in batch.items()}  # the fix, by hand
    prune.prune_model(m, 0.5, "fine", "wanda", calib=[stacked])


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
def test_one_dataloader_batch_as_calib_is_named_as_read_as_two_batches(criterion):
    # calib=next(iter(loader)) is an [inputs, targets] list: read as two batches, the targets
    # failed at the first layer with no word of why they were fed to the model
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    data = torch.utils.data.TensorDataset(torch.randn(64, 16), torch.randint(0, 4, (64,)))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=8)))
    m = copy.deepcopy(model)
    with pytest.raises(ValueError, match=r"calib batch 1 has shape \[8\], which does not fit layer "
                                         r"'0' \(Linear\).*; calib is a list of 2 tensors "
                                         r"\(\[8, 16\] float32, \[8\] int64\), read as 2 batches: "
                                         r"if it is one \(inputs, targets\) batch \(a DataLoader's\), "
                                         r"pass \[batch\] or the inputs alone"):
        prune.prune_model(m, 0.5, "fine", criterion, calib=batch)
    x = torch.randn(5, 16)
    assert torch.equal(m(x), model(x))  # nothing pruned
    with pytest.raises(ValueError, match=r"calib batch 1 has shape \[8, 15\].*expected "
                                         r"\[\.\.\., 16\]$"):  # two batches of inputs: no hint
        prune.prune_model(m, 0.5, "fine", criterion, calib=[batch[0], torch.randn(8, 15)])
    # as the hint says: [batch] calibrates as the inputs alone do
    a = prune.prune_model(copy.deepcopy(model), 0.5, "fine", criterion, calib=[batch])
    b = prune.prune_model(copy.deepcopy(model), 0.5, "fine", criterion, calib=batch[0])
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_calibration_restores_each_modules_own_train_flag():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = tiny_bert_encoder()
            self.head = nn.Linear(32, 2)

        def forward(self, **kw):
            return self.head(self.bert(**kw))

    for crit in ("wanda", "sparsegpt"):
        w = Wrapper()
        w.train()
        w.bert.eval()  # a wrapper in train mode around a BERT in eval mode
        w.bert.encoder.encoder.layer[0].attention.train()  # and one odd submodule
        before = {n: m.training for n, m in w.named_modules()}
        prune.prune_model(w, 0.5, "fine", crit, calib=[_batch(0)])
        assert {n: m.training for n, m in w.named_modules()} == before
    lin = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
    lin.train()
    lin[1].eval()
    prune.prune_model(lin, 0.5, "fine", "wanda", calib=torch.randn(4, 8))
    assert lin.training and lin[0].training and not lin[1].training


def test_channel_pruning_example_input_of_other_kinds():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(32, 8)
    report = prune.channel_prune(copy.deepcopy(m), 0.5, criterion="apoz",
                                 calib=[(x, torch.zeros(32))])
    assert report is not None
    m2 = copy.deepcopy(m)
    prune.channel_prune(m2, 0.5, example_input={"input": x}, criterion="l1")
    assert m2[0].out_features == 8 and m2(x).shape == (32, 4)


def test_sensitivity_and_auto_example_inputs_take_a_tokenizer_output():
    from sparsekern.auto.signature import capture, input_label
    model = tiny_bert_encoder()
    batch = _batch(0)
    layers = ["encoder.encoder.layer.0.intermediate.dense"]
    table = prune.sensitivity_scan(model, lambda m: float(m(**batch).sum()), ratios=[0.5],
                                   criterion="wanda", calib=[batch], layers=layers,
                                   progress=False, warn=False, higher_is_better=False)
    assert list(table.curves) == layers
    sigs = capture(model, batch)
    assert len(sigs) == 12
    assert input_label(batch) == "{'input_ids': [4, 10], 'attention_mask': [4, 10]}"
    assert input_label(sk.Args(torch.zeros(2, 3))) == "Args([2, 3])"
    with pytest.raises(TypeError, match=r"example_input is a str; expected a tensor"):
        input_label("x")


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
def test_a_one_shot_iterable_of_batches_calibrates_like_a_list(criterion):
    """calib given as a generator (or any iterator, e.g. a streaming data pipe): sequential
    Wanda/SparseGPT read it several times and saw it empty after the first ("calib is
    empty"); sensitivity scans prune once per point from the same calib."""
    batches = [_batch(s) for s in range(2)]
    ref = tiny_bert_encoder(seed=0)
    expected = prune.prune_model(ref, 0.5, criterion=criterion, calib=batches)
    m = tiny_bert_encoder(seed=0)
    got = prune.prune_model(m, 0.5, criterion=criterion, calib=(b for b in batches))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[n], expected[n]) for n in got)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref.parameters()))
    layers = list(expected)[:2]
    scores = lambda mod: float(mod(**batches[0]).detach().abs().sum())  # noqa: E731
    base = tiny_bert_encoder(seed=0)
    want = prune.sensitivity_scan(base, scores, ratios=[0.5], criterion=criterion,
                                  calib=batches, layers=layers, progress=False, warn=False)
    have = prune.sensitivity_scan(base, scores, ratios=[0.5], criterion=criterion,
                                  calib=iter(batches), layers=layers, progress=False,
                                  warn=False)
    assert have.curves == want.curves


def test_token_mask_of_takes_a_2d_attention_mask_of_decoder_only_calls():
    ids = torch.ones(2, 5, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(inputs.token_mask_of({"input_ids": ids, "attention_mask": mask}), mask)
    assert torch.equal(inputs.token_mask_of(({"input_ids": ids, "attention_mask": mask}, 0)),
                       mask)  # an (inputs, targets) pair
    assert inputs.token_mask_of({"input_ids": ids}) is None
    assert inputs.token_mask_of(ids) is None
    assert inputs.token_mask_of({"input_ids": ids, "attention_mask": mask[None, None]}) is None
    # encoder-decoder: the mask covers the encoder only; decoder inputs of the same shape
    # would lose real tokens
    assert inputs.token_mask_of({"input_ids": ids, "attention_mask": mask,
                                 "decoder_input_ids": ids}) is None

    class Cfg:
        is_encoder_decoder = True
    enc_dec = nn.Linear(2, 2)
    enc_dec.config = Cfg()
    assert inputs.token_mask_of({"input_ids": ids, "attention_mask": mask}, enc_dec) is None
    rows = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    with inputs.token_mask(mask):
        assert inputs.real_token_rows(rows).shape == (8, 3)
        assert inputs.real_token_rows(rows[:, :3]).shape == (6, 3)  # [2, 3]: every row
        assert inputs.real_token_rows(rows.transpose(0, 1)).shape == (10, 3)  # not [2, 5]
    assert inputs.real_token_rows(rows).shape == (10, 3)


def test_calibration_leaves_a_frozen_config_alone():
    """no_kv_cache switches Hugging Face configs' use_cache off; a config that refuses
    assignment (a frozen dataclass) is left as it is instead of failing calibration."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        use_cache: bool = True

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    model.config = Frozen()
    masks = prune.prune_model(model, 0.5, "fine", "wanda", calib=torch.randn(6, 8))
    assert set(masks) == {"0", "2"} and model.config.use_cache is True


@pytest.mark.parametrize("kind", [tuple, list])
def test_a_top_level_input_ids_mask_pair_is_refused_as_ambiguous(kind):
    # calib=(ids, mask) was read as two batches: the mask ran through the model as token ids
    # (0 and 1 are valid ids), a silently wrong calibration
    model = tiny_bert_encoder()
    b = _batch()
    pair = kind((b["input_ids"], b["attention_mask"]))
    m = copy.deepcopy(model)
    for criterion in ("wanda", "sparsegpt"):
        with pytest.raises(TypeError, match=rf"calib is a {kind.__name__} of two tensors, "
                                            r"\[4, 10\] torch.int64 and \[4, 10\] torch.int64: "
                                            r"it could be two batches.*sparsekern.Args\(input_ids, "
                                            r"attention_mask=mask\) or a dict"):
            prune.prune_model(m, 0.5, "fine", criterion, calib=pair)
    x = _batch(1)
    assert torch.equal(m(**x), model(**x))  # nothing pruned
    # what the message offers works: Args, or a list of two real batches of ids
    prune.prune_model(copy.deepcopy(model), 0.5, "fine", "wanda",
                      calib=sk.Args(b["input_ids"], attention_mask=b["attention_mask"]))
    bert = copy.deepcopy(model.encoder)  # takes input_ids alone
    prune.prune_model(bert, 0.5, "fine", "wanda", calib=[b["input_ids"], _batch(2)["input_ids"]])


@pytest.mark.parametrize("kind", [tuple, list])
def test_a_top_level_ids_mask_token_types_triple_is_refused_as_the_pair_is(kind):
    # calib=(input_ids, attention_mask, token_type_ids) was read as three batches: a model
    # taking input_ids alone ran the mask and the token types as token ids, without an error
    bert = tiny_bert_encoder().encoder  # takes input_ids alone
    b = _batch()
    triple = kind((b["input_ids"], b["attention_mask"], torch.zeros_like(b["input_ids"])))
    m = copy.deepcopy(bert)
    with pytest.raises(TypeError, match=rf"calib is a {kind.__name__} of three tensors, "
                                        r"\[4, 10\] torch.int64, \[4, 10\] torch.int64 and "
                                        r"\[4, 10\] torch.int64: it could be three batches"):
        prune.prune_model(m, 0.5, "fine", "wanda", calib=triple)
    # three real batches of ids in a list, and three float batches in a tuple, still run
    prune.prune_model(m, 0.5, "fine", "wanda",
                      calib=[b["input_ids"], _batch(2)["input_ids"], _batch(3)["input_ids"]])
    mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    prune.prune_model(mlp, 0.5, "fine", "wanda", calib=tuple(torch.randn(3, 4, 8)))


# -- the attention mask found by the forward's parameter names ----------------------------

def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, vocab_size=100, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _padded(seed, b=4, t=16):
    """Fresh random ids [b, t], right-padded (pad id 0) to a random length per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (b, t), generator=g)
    mask = torch.ones_like(ids)
    for row, n in enumerate(torch.randint(t // 4, t, (b,), generator=g).tolist()):
        ids[row, n:], mask[row, n:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("criterion,gran", [("wanda", "fine"), ("sparsegpt", "2:4")])
def test_args_with_a_positional_attention_mask_calibrate_as_the_dict_does(criterion, gran):
    # Args(input_ids, attention_mask) counted the padding tokens; the dict form does not
    model = _tiny_llama()
    batches = [_padded(1), _padded(2)]
    forms = {"dict": [{"input_ids": i, "attention_mask": m} for i, m in batches],
             "args": [sk.Args(i, m) for i, m in batches],
             "args_kw": [sk.Args(i, attention_mask=m) for i, m in batches]}
    masks = {k: prune.prune_model(copy.deepcopy(model), 0.5 if gran == "fine" else None,
                                  gran, criterion, calib=c) for k, c in forms.items()}
    for k in ("args", "args_kw"):
        assert masks[k].keys() == masks["dict"].keys()
        for n in masks["dict"]:
            assert torch.equal(masks[k][n], masks["dict"][n]), (k, n)
    # the reference, padding counted, differs: the comparison above can fail
    unmasked = prune.prune_model(copy.deepcopy(model), 0.5 if gran == "fine" else None, gran,
                                 criterion, calib=[i for i, _ in batches])
    assert any(not torch.equal(unmasked[n], masks["dict"][n]) for n in unmasked)


class _CacheSecond(nn.Module):
    """GPT-2's order: the second parameter is a key/value cache, the mask comes later."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 8)
        self.out = nn.Linear(8, 8)

    def forward(self, input_ids, cache=None, attention_mask=None):
        return self.out(self.emb(input_ids))


def test_the_attention_mask_is_found_by_the_forwards_parameter_names():
    ids, mask = _padded(3)
    llama, bert = _tiny_llama(), tiny_bert_encoder()
    for model in (llama, bert, nn.DataParallel(bert)):  # DataParallel: forward(*a, **kw)
        assert inputs.token_mask_of(sk.Args(ids, mask), model) is mask
        assert inputs.token_mask_of(sk.Args(ids, attention_mask=mask), model) is mask
        assert inputs.token_mask_of((sk.Args(ids, mask), 0), model) is mask  # (inputs, targets)
    # a second positional input bound to another name is not a mask
    other = torch.ones_like(ids)
    for model in (_CacheSecond(), transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=1, n_embd=16, n_head=2, vocab_size=100, n_positions=32))):
        assert inputs.token_mask_of(sk.Args(ids, other), model) is None
        assert inputs.token_mask_of(sk.Args(ids, None, mask), model) is mask
        assert inputs.token_mask_of(sk.Args(ids, attention_mask=mask), model) is mask
    # no model, a call that does not bind, or *args only: the keyword alone counts
    assert inputs.token_mask_of(sk.Args(ids, mask)) is None
    assert inputs.token_mask_of(sk.Args(ids, mask, mask, mask, mask), _CacheSecond()) is None
    assert inputs.token_mask_of(sk.Args(ids, attention_mask=mask, bad=1), _CacheSecond()) is mask

    class VarArgs(nn.Module):
        def forward(self, *args, **kwargs):
            return args[0]
    assert inputs.token_mask_of(sk.Args(ids, mask), VarArgs()) is None
    assert inputs.token_mask_of(sk.Args(ids, attention_mask=mask), VarArgs()) is mask


def test_a_cache_second_model_calibrates_every_token_given_a_positional_second_input():
    # GPT-2-like: Args(ids, x) passes x as the cache, so no token is padding
    model = _CacheSecond()
    ids, mask = _padded(4)
    for item, real in ((sk.Args(ids, mask), ids.numel()),
                       (sk.Args(ids, attention_mask=mask), int(mask.sum()))):
        rows = []
        h = model.out.register_forward_pre_hook(
            lambda m, a: rows.append(inputs.real_token_rows(a[0]).shape[0]))
        try:
            prune.prune_model(model, 0.5, "fine", "wanda", calib=item)
        finally:
            h.remove()
        assert rows and set(rows) == {real}


class _KwargsNet(torch.nn.Module):
    """Takes keyword inputs like a Hugging Face model: forward(input_ids=..., scale=...)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, input_ids, scale=None):
        out = self.fc(input_ids)
        return out if scale is None else out * scale


def test_fine_tune_and_accuracy_take_hugging_face_style_dict_batches():
    torch.manual_seed(0)
    m = _KwargsNet()
    xs, ys = torch.randn(8, 6), torch.randint(0, 3, (8,))
    dicts = [{"input_ids": xs[i:i + 4], "scale": torch.ones(()), "labels": ys[i:i + 4]}
             for i in (0, 4)]
    pairs = [({"input_ids": xs[i:i + 4], "scale": torch.ones(())}, ys[i:i + 4]) for i in (0, 4)]
    assert prune.accuracy(m, dicts) == prune.accuracy(m, pairs)
    m2 = copy.deepcopy(m)
    masks = prune.prune_model(m, 0.5, "fine")
    masks2 = prune.prune_model(m2, 0.5, "fine")
    a = prune.fine_tune(m, dicts, epochs=2, masks=masks, progress=False)
    b = prune.fine_tune(m2, pairs, epochs=2, masks=masks2, progress=False)
    assert a == pytest.approx(b)
    torch.testing.assert_close(m.fc.weight, m2.fc.weight)
    assert bool((m.fc.weight[~masks["fc"]] == 0).all())
    with pytest.raises(ValueError, match=r"a Mapping of the model's arguments with the targets "
                                         r"under 'labels', got dict without a 'labels' key "
                                         r"\(keys \['input_ids'\]\)"):
        prune.accuracy(m, [{"input_ids": xs}])


class _Echo(torch.nn.Module):
    """Token classification that predicts the class given in its input: logits = one-hot."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, input_ids):
        return torch.nn.functional.one_hot(input_ids, 3).float() * 10 + 0 * self.fc.weight.sum()


def test_accuracy_counts_tokens_and_ignores_padding_labels():
    ids = torch.tensor([[0, 1, 2, 2], [1, 1, 0, 0]])
    labels = ids.clone()
    labels[1, 2:] = -100                       # padding
    labels[0, 3] = 0                           # one wrong token of 6 counted
    acc = prune.accuracy(_Echo(), [{"input_ids": ids, "labels": labels}])
    assert acc == pytest.approx(5 / 6)
    # targets as a list of numbers (a hand-built batch) are a tensor
    assert prune.accuracy(_Echo(), [(torch.tensor([[2]]), [[2]])]) == 1.0
    assert prune.accuracy(_Echo(), [{"input_ids": torch.tensor([[1, 0]]), "labels": [[1, 1]]}]) == 0.5
    with pytest.raises(ValueError, match=r"predictions \(argmax over the last dimension of its "
                                         r"output\) have shape \[2, 4\] and the targets \[2\]"):
        prune.accuracy(_Echo(), [(ids, torch.tensor([0, 1]))])
    with pytest.raises(ValueError, match=r"the batch's 'labels' is a list that is not a tensor "
                                         r"of numbers"):
        prune.accuracy(_Echo(), [{"input_ids": ids, "labels": ["a", "b"]}])
