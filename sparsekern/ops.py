"""The op ``sparsekern::spmm``: schema, argument checks, fake impl, autograd, dispatch.

    spmm(Tensor values, Tensor indices, Tensor offsets, SymInt M, SymInt K, str layout,
         Tensor B, Tensor? bias=None) -> Tensor

computes ``A @ B (+ bias[:, None])`` for the sparse A [M, K] given by its format tensors
(see sparsekern.formats), B dense [K, N] with any strides, bias [M]. The output is [M, N]
in B's dtype (float32 accumulation; float64 in float64), row-major unless B is
column-major (see sparsekern._output). Two helper ops carry the backward pass so that it
traces under torch.compile: ``spmm_transposed`` (A.T @ G) and ``spmm_sampled_dot``
((G @ B.T) at the stored entries).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _extension, _output
from .backends import reference, select
from .formats.validate import check_format_meta

_NS = "sparsekern"
_FMT = "Tensor values, Tensor indices, Tensor offsets, SymInt M, SymInt K, str layout"

torch.library.define(f"{_NS}::spmm", f"({_FMT}, Tensor B, Tensor? bias=None) -> Tensor")
# The Python path of spmm; the C++ CPU fast path hands every call it does not serve to it.
torch.library.define(f"{_NS}::_spmm_dispatch", f"({_FMT}, Tensor B, Tensor? bias=None) -> Tensor")
torch.library.define(f"{_NS}::spmm_transposed", f"({_FMT}, Tensor G) -> Tensor")
torch.library.define(f"{_NS}::spmm_sampled_dot", f"({_FMT}, Tensor G, Tensor B) -> Tensor")

#: Half-precision weights may meet float32 activations (weight-only compression).
_MIXED_OK = {(torch.float16, torch.float32), (torch.bfloat16, torch.float32)}


def check_dense_operand(t, name: str, values: torch.Tensor, rows, what_rows: str) -> None:
    """Check a dense operand ([rows, N], dtype and device of the weight)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D of shape [{what_rows}, N], got shape "
                         f"{list(t.shape)} ({t.dim()}-D)")
    if t.shape[0] != rows:
        raise ValueError(f"{name} has shape {list(t.shape)} but A needs {what_rows}={rows} rows; "
                         f"expected {name} of shape [{rows}, N]")
    if t.dtype.is_complex or not t.dtype.is_floating_point:
        raise TypeError(f"{name} has unsupported dtype {t.dtype}; expected a floating dtype "
                        f"(float32, float16, bfloat16, float64)")
    if t.dtype != values.dtype and (values.dtype, t.dtype) not in _MIXED_OK:
        raise TypeError(f"{name} has dtype {t.dtype} but the sparse values have dtype "
                        f"{values.dtype}; expected the same dtype (or float32 {name} with "
                        f"float16/bfloat16 values)")
    if t.device != values.device:
        raise ValueError(f"{name} is on {t.device} but the sparse values are on {values.device}; "
                         f"expected one device")


def check_spmm_args(values, indices, offsets, M, K, layout, B, bias) -> None:
    """O(1) checks every call runs before any backend (names argument, shape, expectation)."""
    check_format_meta(values, indices, offsets, M, K, layout)
    check_dense_operand(B, "B", values, K, "K")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dim() != 1 or bias.shape[0] != M:
            raise ValueError(f"bias has shape {list(bias.shape)}; expected [M] = [{M}]")
        if bias.dtype != B.dtype:
            raise TypeError(f"bias has dtype {bias.dtype}; expected the output dtype {B.dtype}")
        if bias.device != B.device:
            raise ValueError(f"bias is on {bias.device}; expected {B.device}")


def _spmm_impl(values, indices, offsets, M, K, layout, B, bias=None):
    """Validate, allocate the output, pick a backend and run it."""
    check_spmm_args(values, indices, offsets, M, K, layout, B, bias)
    out = _output.empty_output(M, B, B.dtype)
    if out.numel() == 0:
        return out
    backend = select(layout, values.dtype, B.dtype, values.device, M, K, B.shape[1])
    return backend.spmm(values, indices, offsets, M, K, layout, B, bias, out)


# CUDA (and CPU when the C++ fast path is not built) run the Python path directly.
torch.library.register_kernel(f"{_NS}::spmm", ("cuda",) if _extension._C is not None
                              else ("cpu", "cuda"), _spmm_impl)
torch.library.register_kernel(f"{_NS}::_spmm_dispatch", ("cpu", "cuda"), _spmm_impl)


@torch.library.register_fake(f"{_NS}::spmm")
def _spmm_fake(values, indices, offsets, M, K, layout, B, bias=None):
    check_spmm_args(values, indices, offsets, M, K, layout, B, bias)
    return _output.empty_output(M, B, B.dtype)


@torch.library.register_kernel(f"{_NS}::spmm_transposed", ("cpu", "cuda"))
def _spmm_transposed_impl(values, indices, offsets, M, K, layout, G):
    check_format_meta(values, indices, offsets, M, K, layout)
    check_dense_operand(G, "G", values, M, "M")
    return reference.spmm_transposed(values, indices, offsets, M, K, layout, G)


@torch.library.register_fake(f"{_NS}::spmm_transposed")
def _spmm_transposed_fake(values, indices, offsets, M, K, layout, G):
    return G.new_empty((K, G.shape[1]))


@torch.library.register_kernel(f"{_NS}::spmm_sampled_dot", ("cpu", "cuda"))
def _sampled_dot_impl(values, indices, offsets, M, K, layout, G, B):
    check_format_meta(values, indices, offsets, M, K, layout)
    check_dense_operand(G, "G", values, M, "M")
    check_dense_operand(B, "B", values, K, "K")
    return reference.sampled_dot(values, indices, offsets, M, K, layout, G, B)


@torch.library.register_fake(f"{_NS}::spmm_sampled_dot")
def _sampled_dot_fake(values, indices, offsets, M, K, layout, G, B):
    return torch.empty_like(values, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    values, indices, offsets, M, K, layout, B, bias = inputs
    ctx.save_for_backward(values, indices, offsets, B)
    ctx.M, ctx.K, ctx.layout = M, K, layout
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    values, indices, offsets, B = ctx.saved_tensors
    M, K, layout = ctx.M, ctx.K, ctx.layout
    need = ctx.needs_input_grad
    g_values = g_B = g_bias = None
    if need[0]:
        g_values = torch.ops.sparsekern.spmm_sampled_dot(values, indices, offsets, M, K, layout,
                                                         grad, B)
    if need[6]:
        g_B = torch.ops.sparsekern.spmm_transposed(values, indices, offsets, M, K, layout, grad)
    if len(need) > 7 and need[7]:
        g_bias = grad.sum(1)
    grads = (g_values, None, None, None, None, None, g_B, g_bias)
    return grads[:len(need)]


torch.library.register_autograd(f"{_NS}::spmm", _backward, setup_context=_setup_context)


def spmm_op(values, indices, offsets, M, K, layout: str, B: torch.Tensor,
            bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Call ``torch.ops.sparsekern.spmm`` (exists so the wrappers have one entry point)."""
    return torch.ops.sparsekern.spmm(values, indices, offsets, M, K, layout, B, bias)
