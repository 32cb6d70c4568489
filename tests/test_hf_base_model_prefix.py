"""load_sparse between a transformers task model and its base model: a checkpoint of
BertForSequenceClassification (keys under ``bert.``) into BertModel, and a base model's
checkpoint into a task model (prefix added; the head's tensors are missing, or filled when
tied), on tiny random configs built in-process (no download)."""
import logging

import pytest
import torch

import sparsekern as sk
from sparsekern import prune
from sparsekern.nn import SparseLinear

transformers = pytest.importorskip("transformers", reason="transformers is not installed")


def bert_config():
    return transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=16, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, num_labels=4)


def bert(cls, seed=0):
    torch.manual_seed(seed)
    return cls(bert_config()).eval()


def gpt2_config():
    return transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                   n_head=2, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0)


def gpt2(cls, seed=0):
    torch.manual_seed(seed)
    return cls(gpt2_config()).eval()


def ids(batch=2, seq=8, seed=1):
    return torch.randint(0, 64, (batch, seq), generator=torch.Generator().manual_seed(seed))


def sparse_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, SparseLinear)}


def save(model, tmp_path, how):
    """The checkpoint of ``model`` written ``how``: its path."""
    if how == "save_pretrained":
        model.save_pretrained(tmp_path / "hf")
        return tmp_path / "hf"
    path = tmp_path / f"model{how}"
    sk.save_sparse(model, path)
    return path


def sparsified(model):
    prune.prune_model(model, 0.5, "2:4")
    return sk.sparsify(model, "2:4")


@pytest.mark.parametrize("how", [".safetensors", ".pt", "save_pretrained"])
def test_load_a_task_model_checkpoint_into_its_base_model(tmp_path, how, caplog):
    task = sparsified(bert(transformers.BertForSequenceClassification))
    assert isinstance(task.classifier, SparseLinear)  # the head is packed too: dropped
    path = save(task, tmp_path, how)
    with caplog.at_level(logging.WARNING, logger="sparsekern"):
        base = sk.load_sparse(bert(transformers.BertModel, seed=5), path)
    assert sparse_names(base) == {n[len("bert."):] for n in sparse_names(task)
                                  if n.startswith("bert.")}
    assert "not using ['classifier']" in caplog.text and "keys under 'bert.'" in caplog.text
    x = ids()
    torch.testing.assert_close(base(input_ids=x).last_hidden_state,
                               task.bert(input_ids=x).last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(base(input_ids=x).pooler_output,
                               task.bert(input_ids=x).pooler_output, rtol=0, atol=0)


@pytest.mark.parametrize("how", [".safetensors", ".pt", "save_pretrained"])
def test_a_base_checkpoint_into_a_task_model_names_the_missing_head(tmp_path, how):
    base = sparsified(bert(transformers.BertModel))
    path = save(base, tmp_path, how)
    task = bert(transformers.BertForSequenceClassification, seed=5)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    # the prefix is added: only the head is missing (not every key), and the model is as it was
    with pytest.raises(ValueError, match=r"state does not match the model: missing "
                                         r"\['classifier\.weight', 'classifier\.bias'\], "
                                         r"unexpected \[\]; .* holds a base model \(keys without "
                                         r"the 'bert\.' of BertForSequenceClassification, added "
                                         r"on loading\), which has no task head: load it into "
                                         r"the base model, load_sparse\(model\.bert, path\)"):
        sk.load_sparse(task, path)
    assert not sparse_names(task)
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())
    # what the message advises: the base model inside the task model, the head kept
    sk.load_sparse(task.bert, path)
    assert sparse_names(task) == {f"bert.{n}" for n in sparse_names(base)}
    assert torch.equal(task.classifier.weight, before["classifier.weight"])
    x = ids()
    torch.testing.assert_close(task.bert(input_ids=x).last_hidden_state,
                               base(input_ids=x).last_hidden_state, rtol=0, atol=0)


@pytest.mark.parametrize("how", [".safetensors", ".pt", "save_pretrained"])
def test_a_base_checkpoint_loads_into_a_task_model_whose_head_is_tied(tmp_path, how):
    # GPT2LMHeadModel's lm_head shares the token embedding: nothing of it is missing
    base = gpt2(transformers.GPT2Model)
    names = [n for n, m in base.named_modules() if type(m).__name__ == "Conv1D"]
    prune.prune_model(base, granularity="2:4", layers=names)
    base = sk.sparsify(base, "2:4", layers=names)
    path = save(base, tmp_path, how)
    lm = sk.load_sparse(gpt2(transformers.GPT2LMHeadModel, seed=5), path)
    assert lm.lm_head.weight is lm.transformer.wte.weight  # still tied
    assert sparse_names(lm) == {f"transformer.{n}" for n in sparse_names(base)}
    x = ids()
    hidden = base(input_ids=x).last_hidden_state
    torch.testing.assert_close(lm.transformer(input_ids=x).last_hidden_state, hidden,
                               rtol=0, atol=0)
    torch.testing.assert_close(lm(input_ids=x).logits, hidden @ base.wte.weight.t())


def test_a_task_checkpoint_round_trips_into_the_same_task_model(tmp_path):
    # the same class: nothing is mapped, every output the same (the head included)
    task = sparsified(bert(transformers.BertForSequenceClassification))
    path = save(task, tmp_path, ".safetensors")
    fresh = sk.load_sparse(bert(transformers.BertForSequenceClassification, seed=5), path)
    x = ids()
    torch.testing.assert_close(fresh(input_ids=x).logits, task(input_ids=x).logits,
                               rtol=0, atol=0)


def test_an_ambiguous_checkpoint_is_not_mapped(tmp_path):
    # the base keys both bare and under 'bert.': stripping would give two tensors one name
    base = bert(transformers.BertModel)
    state = base.state_dict()
    path = tmp_path / "both.pt"
    torch.save({**state, **{f"bert.{k}": v for k, v in state.items()}}, path)
    fresh = bert(transformers.BertModel, seed=5)
    with pytest.raises(ValueError, match=r"state does not match the model: missing \[\], "
                                         r"unexpected \['bert\.embeddings"):
        sk.load_sparse(fresh, path)
    # a key under the prefix that the base model lacks once stripped (another config)
    other = transformers.BertForSequenceClassification(
        transformers.BertConfig(**{**bert_config().to_dict(), "num_hidden_layers": 3}))
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected \[.*'bert\.encoder\.layer\.2\."):
        sk.load_sparse(fresh, path)
