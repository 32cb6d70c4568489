"""Random-initialised models with real architectures' shapes, for end-to-end latency.

* ``Encoder``: a BERT-style transformer encoder (post-LayerNorm; q, k, v, o projections,
  GELU feed-forward), built from plain nn.Linear so that sparsify can swap every one.
  Configs: MiniLM-L6 (hidden 384, 12 heads, FFN 1536, 6 layers) and BERT-base (768, 12,
  3072, 12). Embeddings and pooler are left out: they are lookups, not matmuls.
* ``LlamaMLP``: one Llama-7B MLP block, x + down(silu(gate(rmsnorm(x))) * up(rmsnorm(x))),
  hidden 4096, intermediate 11008, no biases.

Inputs are hidden states x [1, tokens, hidden]: "batch" in the model benchmark is the
number of tokens in one forward, i.e. the N the sparse kernels see.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    name: str
    hidden: int
    heads: int
    ffn: int
    layers: int


MINILM_L6 = EncoderConfig("MiniLM-L6", 384, 12, 1536, 6)
BERT_BASE = EncoderConfig("BERT-base", 768, 12, 3072, 12)


class EncoderLayer(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.heads = c.heads
        self.q, self.k, self.v, self.o = (nn.Linear(c.hidden, c.hidden) for _ in range(4))
        self.ln1 = nn.LayerNorm(c.hidden)
        self.up = nn.Linear(c.hidden, c.ffn)
        self.down = nn.Linear(c.ffn, c.hidden)
        self.ln2 = nn.LayerNorm(c.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, S, hidden] -> [B, S, hidden]."""
        B, S, H = x.shape
        def split(t):  # [B, S, H] -> [B, heads, S, H/heads]
            return t.view(B, S, self.heads, H // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        x = self.ln1(x + self.o(a.transpose(1, 2).reshape(B, S, H)))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class Encoder(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.config = c
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaMLP(nn.Module):
    """Llama MLP block with its pre-norm and residual; x [B, S, hidden]."""

    def __init__(self, hidden: int = 4096, intermediate: int = 11008):
        super().__init__()
        self.norm = RMSNorm(hidden)
        self.gate = nn.Linear(hidden, intermediate, bias=False)
        self.up = nn.Linear(hidden, intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


#: name -> (builder, hidden size)
MODELS = {
    "minilm-l6": (lambda: Encoder(MINILM_L6), MINILM_L6.hidden),
    "bert-base": (lambda: Encoder(BERT_BASE), BERT_BASE.hidden),
    "llama7b-mlp": (lambda: LlamaMLP(4096, 11008), 4096),
}


def build(name: str, seed: int = 0, dtype=torch.float32, device="cpu") -> nn.Module:
    """The model ``name`` (see MODELS), random-initialised from ``seed``, in eval mode."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    make, _ = MODELS[name]
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream alone
        torch.manual_seed(seed)
        model = make()
    return model.to(device=device, dtype=dtype).eval()


def hidden_size(name: str) -> int:
    return MODELS[name][1]
