"""Thin Python wrappers over ``torch.ops.sparsekern.spmm``."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .formats import SparseFormat, layouts
from .ops import _MIXED_OK, dense_path_needed, spmm_op

#: The op's overload itself: calling it skips the OpOverloadPacket's lookup (~0.5-1 us).
_SPMM = torch.ops.sparsekern.spmm.default


def _check_format(A) -> None:
    if not isinstance(A, SparseFormat):
        raise TypeError(f"A must be a packed sparse matrix from sparsekern.to_sparse "
                        f"(layout one of {', '.join(map(repr, layouts.names()))}), got "
                        f"{type(A).__name__}")


def _check_not_fx_proxy(x, name: str) -> None:
    """A torch.fx Proxy (torch.fx.symbolic_trace, FX graph-mode quantization's prepare_fx)
    has no shape, dtype or device for the input checks: name FX tracing and the ways around
    it instead of "x must be a torch.Tensor ..., got Proxy", which reads as a bad input."""
    if isinstance(x, torch.fx.Proxy):
        raise TypeError(
            f"{name} is a torch.fx Proxy: torch.fx.symbolic_trace (and FX graph-mode "
            f"quantization, prepare_fx) cannot trace through a sparsekern layer "
            f"(sparsekern.SparseLinear, SparseConv2d, sparsekern.linear / spmm), which checks "
            f"its input's shape, dtype and device; expected a torch.Tensor. torch.export.export "
            f"and torch.compile trace it. To keep it as one opaque call in an FX graph, make the "
            f"sparse layers leaves: for prepare_fx, prepare_custom_config="
            f"PrepareCustomConfig().set_non_traceable_module_classes([sparsekern.SparseLinear, "
            f"sparsekern.SparseConv2d]); for symbolic tracing, a torch.fx.Tracer whose "
            f"is_leaf_module returns True for both")


def _check_not_nested(x: torch.Tensor, name: str) -> None:
    """A nested tensor (strided or jagged) has no shape to check: name it instead of failing
    inside torch ("NestedTensorImpl doesn't support sizes", or NotImplementedError)."""
    if x.is_nested:
        raise TypeError(f"{name} must be a dense (strided) tensor, got a nested tensor (layout "
                        f"{x.layout}); pad it (torch.nested.to_padded_tensor) or pass its "
                        f"components one by one")


def check_input(x: torch.Tensor, values: torch.Tensor, name: str = "x") -> None:
    """Raise TypeError/ValueError naming ``name`` when the layer input x cannot meet the
    weight's ``values``: another device, or a dtype that is neither the weights' nor float32
    with float16/bfloat16 weights (under torch.autocast the op casts both itself)."""
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout} "
                        f"(convert it with .to_dense())")
    if x.device != values.device:
        raise ValueError(f"{name} is on {x.device} but the layer's weight is on "
                         f"{values.device}; expected one device (move the input or the model)")
    if x.dtype == values.dtype or (values.dtype, x.dtype) in _MIXED_OK:
        return
    if x.dtype.is_complex or not x.dtype.is_floating_point:
        raise TypeError(f"{name} has dtype {x.dtype}; expected a floating dtype (float32, "
                        f"float16, bfloat16, float64)")
    if (x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
            and torch.float64 not in (x.dtype, values.dtype)):
        return  # the op's autocast kernel casts both (it never casts float64: named below)
    raise TypeError(f"{name} has dtype {x.dtype} but the layer's weight has dtype "
                    f"{values.dtype}; expected the same dtype (convert the input or the model "
                    f"with .to(dtype); float32 {name} may meet float16/bfloat16 weights)")


def spmm(A: SparseFormat, B: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A @ B for a packed A [M, K] and dense B [K, N] (any strides) or [K] (GEMV).

    Returns [M, N] (or [M] for 1-D B) in B's dtype; bias [M] is added to every column.
    """
    _check_format(A)
    if not isinstance(B, torch.Tensor):
        _check_not_fx_proxy(B, "B")
        raise TypeError(f"B must be a torch.Tensor of shape [K, N] or [K], got {type(B).__name__}")
    _check_not_nested(B, "B")
    bias = weight_only_bias(bias, B.dtype, A.values.dtype)
    if B.dim() == 1:
        return spmm_op(*A.op_args(), B.unsqueeze(1), bias).squeeze(1)
    if B.dim() != 2:
        raise ValueError(f"B must be of shape [K, N] or [K] with K={A.shape[1]}, got shape "
                         f"{list(B.shape)} ({B.dim()}-D)")
    return spmm_op(*A.op_args(), B, bias)


_HALF = (torch.float16, torch.bfloat16)


def weight_only_bias(bias: Optional[torch.Tensor], x_dtype: torch.dtype,
                     values_dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The bias [M] a layer adds to its output: upcast to float32 when float16/bfloat16
    weights meet float32 activations (weight-only compression; a layer cast with .half() or
    .bfloat16() holds its bias in that dtype too), else as given (the op checks it)."""
    if (isinstance(bias, torch.Tensor) and x_dtype == torch.float32 and bias.dtype in _HALF
            and values_dtype in _HALF):
        return bias.float()
    return bias


def linear(x: torch.Tensor, A: SparseFormat, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ A.T + bias`` for x [..., K], A [M, K] packed, bias [M]; returns [..., M].

    This is what SparseLinear calls. x's rows become B's columns (B = x.T, column-major),
    so the output comes back as a contiguous [..., M] without a copy.
    """
    _check_format(A)
    if not isinstance(x, torch.Tensor):
        _check_not_fx_proxy(x, "x")
        raise TypeError(f"x must be a torch.Tensor of shape [..., K], got {type(x).__name__}")
    M, K = A.shape
    _check_not_nested(x, "x")
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"x has shape {list(x.shape)}; expected [..., K] with K={K} "
                         f"(the in_features of A of shape [{M}, {K}])")
    check_input(x, A.values)
    bias = weight_only_bias(bias, x.dtype, A.values.dtype)
    op = spmm_op if dense_path_needed(x, A.values, bias) else _SPMM
    if x.dim() == 2 and not torch.jit.is_tracing():  # Y [M, N] column-major: Y.t() contiguous
        return op(A.values, A.indices, A.offsets, M, K, A.layout, x.t(), bias).t()
    # Any rank; also what torch.jit.trace records (reshape(-1, K), not a traced constant, so a
    # trace taken at one rank runs at another, as nn.Linear's does).
    Y = op(A.values, A.indices, A.offsets, M, K, A.layout, x.reshape(-1, K).t(), bias)
    return Y.t().reshape(x.shape[:-1] + (M,))
