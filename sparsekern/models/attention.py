"""sparsekern's fused CPU attention as a Hugging Face ``transformers`` attention implementation.

    model = sparsekern.models.use_fused_attention(model)   # any transformers PreTrainedModel,
                                                           # or a module holding some
Once a model's linear layers are sparse, its dense attention is a large share of what is
left: at 32 sequences of 64 tokens, a third of a 90%-sparse MiniLM's compiled forward went to
two batched matmuls, a softmax and head-layout copies (bench/results/attention-2026-12-08).
``torch.ops.sparsekern.attention`` fuses them per block of query rows (see
sparsekern._attention). This module registers it with transformers' AttentionInterface
under the name "sparsekern" (with the "eager" mask builder: an additive float mask, or none
where nothing is masked) and switches models to it. Eager, torch.compile and
torch.export / AOTInductor all run it.

Calls the kernel does not serve run elsewhere: attention with extra terms (logit softcap as in
Gemma 2, attention sinks as in GPT-OSS, a position bias) and ``output_attentions`` (which
wants the probabilities) through the model's own eager attention function (its modeling
module's ``eager_attention_forward``; without one, sdpa for extra terms and the plain eager
formula for the weights); dropout during training and tensors off the CPU through
transformers' "sdpa" function, unchanged. A sliding window (Mistral, Gemma 2) is in the mask
the model builds, so the kernel serves it. Without a mask a causal module
(``module.is_causal``, or ``is_causal`` passed by the model) gets
scaled_dot_product_attention's causal mask (query i attends keys j <= i). A query row with
every key masked gives 0 (as scaled_dot_product_attention; transformers' own masks never
mask a whole row with -inf).

Needs transformers >= 4.56 (its AttentionInterface). An AOTInductor package of a model using
it runs in a process that has imported sparsekern (the package calls the op by name).
"""
from __future__ import annotations

import sys

import torch
from torch import nn

#: The attn_implementation name under which transformers finds the kernel.
NAME = "sparsekern"
#: keyword arguments of terms the kernel does not compute (the model's eager function does)
_EXTRA_TERMS = ("softcap", "s_aux", "sinks", "position_bias")


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(*args, **kwargs)


def _causal_mask(query, key, attention_mask, module, is_causal):
    """attention_mask, or scaled_dot_product_attention's causal mask (bool [Sq, Sk], query i
    attends keys j <= i) where there is none and the module is causal."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if attention_mask is None and causal and query.shape[2] > 1:
        return torch.ones(query.shape[2], key.shape[2], dtype=torch.bool,
                          device=query.device).tril()
    return attention_mask


def _eager_with_weights(module, query, key, value, attention_mask, dropout, scaling):
    """The eager formula, returning (output [B, Sq, H, Dv], probabilities [B, H, Sq, Sk])."""
    rep = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scores = torch.matmul(query, key.transpose(2, 3)) * (
        query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros_like(attention_mask, dtype=scores.dtype).masked_fill(
                ~attention_mask, float("-inf"))
        scores = scores + attention_mask
    weights = torch.softmax(scores, -1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _model_eager(module: nn.Module):
    """The eager attention function of ``module``'s modeling file, or None."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: query [B, H, Sq, D], key/value
    [B, Hkv, Sk, D / Dv]; returns (output [B, Sq, H, Dv] contiguous, the probabilities
    [B, H, Sq, Sk] where an eager formula ran, else None)."""
    extra = any(kwargs.get(k) is not None for k in _EXTRA_TERMS)
    eager = _model_eager(module) if extra or kwargs.get("output_attentions") else None
    if eager is not None:
        return eager(module, query, key, value, attention_mask, dropout=dropout,
                     scaling=scaling, **kwargs)
    if (dropout > 0.0 and module.training) or query.device.type != "cpu" or extra:
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout,
                     scaling=scaling, is_causal=is_causal, **kwargs)
    attention_mask = _causal_mask(query, key, attention_mask, module, is_causal)
    if kwargs.get("output_attentions"):
        return _eager_with_weights(module, query, key, value, attention_mask, dropout, scaling)
    out = torch.ops.sparsekern.attention(query, key, value, attention_mask, scaling)
    return out.transpose(1, 2), None


def register() -> str:
    """Registers "sparsekern" with transformers' attention and mask interfaces (idempotent);
    returns the name. ImportError names the package when transformers is missing."""
    try:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import eager_mask
    except ImportError as e:
        raise ImportError("sparsekern.models.use_fused_attention needs transformers >= 4.56 "
                          "(its AttentionInterface); pip install transformers") from e
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME


def use_fused_attention(model: nn.Module) -> nn.Module:
    """Switches every transformers model in ``model`` (itself, or the submodules that are
    PreTrainedModels, e.g. a sentence encoder's) to sparsekern's fused attention; returns
    ``model``. ValueError if it holds none."""
    register()
    from transformers import PreTrainedModel
    found = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    # the outermost ones: set_attn_implementation covers their submodels
    outer = [m for m in found if not any(m is not o and any(c is m for c in o.modules())
                                         for o in found)]
    if not outer:
        raise ValueError(f"use_fused_attention: model ({type(model).__name__}) holds no "
                         "transformers PreTrainedModel")
    for m in outer:
        m.set_attn_implementation(NAME)
    return model
