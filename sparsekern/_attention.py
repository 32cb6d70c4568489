"""The op ``sparsekern::attention``: argument checks, fake impl, autograd, non-CPU path (its
schema is in sparsekern/_ops.py).

    attention(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None,
              float? scale=None) -> Tensor

computes ``softmax(scale * query @ key.T + attn_mask) @ value`` per batch and head, as
``torch.nn.functional.scaled_dot_product_attention`` does without dropout:
query [B, H, Sq, D], key [B, Hkv, Sk, D], value [B, Hkv, Sk, Dv], any strides, one dtype
(float32, float64, bfloat16, float16), H a multiple of Hkv (grouped-query attention: query
head h reads key/value head h // (H // Hkv)); attn_mask bool (True takes part) or floating
(added to the scores), broadcastable to [B, H, Sq, Sk]; scale defaults to D ** -0.5. Returns
[B, H, Sq, Dv] in query's dtype, stored as [B, Sq, H, Dv] (its ``transpose(1, 2)`` is
contiguous: the [B, Sq, H * Dv] a model's output projection reads). A query row whose scores
are all -inf (every key masked) gives 0, as scaled_dot_product_attention does; a NaN score
gives NaN.

On the CPU the C++ kernel (csrc/cpu/attention.cpp) fuses the two products and the softmax
per block of query rows, in float32 (half dtypes converted) or float64; elsewhere, and
without the compiled extension, the reference formula (sparsekern.backends.reference) runs.
The backward pass recomputes the probabilities with the reference formula (gradients for
query, key, value and a floating attn_mask).
"""
from __future__ import annotations

import math

import torch

from . import _extension
from ._ops import NS as _NS
from .backends import reference

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _fail(msg: str):
    raise ValueError(f"sparsekern.attention: {msg}")


def check_attention_args(query, key, value, attn_mask, scale) -> None:
    """The C++ kernel's checks (csrc/ops.cpp, attention_cpu), with the same messages."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"sparsekern.attention: {name} must be a torch.Tensor; got "
                            f"{type(t).__name__}")
        if t.layout != torch.strided or t.is_nested:
            _fail(f"{name} must be a strided (dense) tensor; got layout {t.layout}")
        if t.dim() != 4:
            _fail(f"{name} must be 4-D [batch, heads, sequence, head_dim]; got shape "
                  f"{list(t.shape)}")
        if t.dtype != query.dtype:
            _fail(f"{name} must have query's dtype {query.dtype}; got {t.dtype}")
        if t.device != query.device:
            _fail(f"{name} must be on query's device {query.device}; got {t.device}")
    if query.dtype not in _DTYPES:
        _fail(f"query must be float32, float64, bfloat16 or float16; got {query.dtype}")
    B, H, Sq, D = query.shape
    Hkv, Sk = key.shape[1], key.shape[2]
    if key.shape[0] != B or value.shape[0] != B:
        _fail(f"key and value must have query's batch size {B}; got key {list(key.shape)}, "
              f"value {list(value.shape)}")
    if value.shape[1] != Hkv or value.shape[2] != Sk:
        _fail(f"value must have key's heads and length [{Hkv}, {Sk}]; got value "
              f"{list(value.shape)}")
    if Hkv < 1 or H % Hkv != 0:
        _fail(f"query's heads ({H}) must be a multiple of key's heads ({Hkv})")
    if key.shape[3] != D:
        _fail(f"key's head dim must be query's ({D}); got key {list(key.shape)}")
    if D < 1:
        _fail("query's head dim (query.size(-1)) must be at least 1; got 0")
    if scale is not None and not math.isfinite(scale):
        _fail(f"scale must be finite; got {scale}")
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor) or attn_mask.layout != torch.strided:
            _fail(f"attn_mask must be a strided tensor or None; got {type(attn_mask).__name__}")
        if attn_mask.device != query.device:
            _fail(f"attn_mask must be on query's device {query.device}; got {attn_mask.device}")
        if attn_mask.dtype != torch.bool and not attn_mask.dtype.is_floating_point:
            _fail(f"attn_mask must be bool or floating point; got {attn_mask.dtype}")
        shape = [B, H, Sq, Sk]
        m = list(attn_mask.shape)
        if len(m) > 4 or any(a not in (b, 1) for a, b in zip(m[::-1], shape[::-1])):
            _fail(f"attn_mask of shape {m} does not broadcast to [batch, heads, query length, "
                  f"key length] = {shape}")


def _scale(query, scale):
    return query.shape[-1] ** -0.5 if scale is None else scale


def _attention_impl(query, key, value, attn_mask=None, scale=None):
    check_attention_args(query, key, value, attn_mask, scale)
    return reference.attention(query, key, value, attn_mask, _scale(query, scale))


# CUDA (and CPU when the C++ kernel is not built) run the reference formula.
torch.library.register_kernel(f"{_NS}::attention", ("cuda",) if _extension._C is not None
                              else ("cpu", "cuda"), _attention_impl)


@torch.library.register_fake(f"{_NS}::attention")
def _attention_fake(query, key, value, attn_mask=None, scale=None):
    check_attention_args(query, key, value, attn_mask, scale)
    B, H, Sq, _ = query.shape
    return query.new_empty((B, Sq, H, value.shape[3])).transpose(1, 2)


def _setup_context(ctx, inputs, output):
    query, key, value, attn_mask, scale = inputs
    ctx.save_for_backward(query, key, value, attn_mask)
    ctx.scale = _scale(query, scale)


def _backward(ctx, grad):
    """Recomputes P = softmax(S); dV = P.T dO, dP = dO V.T, dS = P (dP - rowsum(dP P)),
    dQ = scale dS K, dK = scale dS.T Q (key/value heads shared by a group of query heads sum
    their group's gradients); a floating attn_mask gets dS summed to its shape."""
    query, key, value, attn_mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    p = reference.attention_scores(query, key, attn_mask, ctx.scale)
    rep = query.shape[1] // key.shape[1]
    g = grad.to(p.dtype)
    k = key.repeat_interleave(rep, 1).to(p.dtype)
    v = value.repeat_interleave(rep, 1).to(p.dtype)
    dp = torch.matmul(g, v.transpose(-2, -1))
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))

    def grouped(t):  # [B, H, S, X] -> [B, Hkv, S, X]: sum over each group of query heads
        return t.unflatten(1, (key.shape[1], rep)).sum(2) if rep > 1 else t

    dq = (torch.matmul(ds, k) * ctx.scale).to(query.dtype) if need[0] else None
    dk = (grouped(torch.matmul(ds.transpose(-2, -1), query.to(p.dtype))) * ctx.scale
          ).to(key.dtype) if need[1] else None
    dv = grouped(torch.matmul(p.transpose(-2, -1), g)).to(value.dtype) if need[2] else None
    dmask = None
    if need[3] and attn_mask is not None and attn_mask.dtype.is_floating_point:
        dmask = ds.sum_to_size(attn_mask.shape).to(attn_mask.dtype)
    return dq, dk, dv, dmask, None


torch.library.register_autograd(f"{_NS}::attention", _backward, setup_context=_setup_context)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attn_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """``torch.ops.sparsekern.attention`` (see the module docstring for shapes and dtypes)."""
    return torch.ops.sparsekern.attention(query, key, value, attn_mask, scale)
