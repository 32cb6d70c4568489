"""Triton backend: binds the kernels of sparsekern/triton/ (GPU, or Triton's CPU interpreter).

Available when ``triton`` imports and either a CUDA device is present or
``TRITON_INTERPRET=1`` is set (then CPU tensors run in the interpreter; tests use it on
small shapes). Serves the layouts of ``SERVES`` (2:4, bsr, csc) with float32, float16 and bfloat16, values and B
of the same dtype. float32 products run on tensor cores in TF32 (10-bit mantissa inputs,
float32 accumulation): relative error up to ~1e-3 (tests/triton/tolerance.py derives it).
bfloat16 is not offered to the interpreter, which computes it wrongly (Triton 3.x).

Glue only: the index tensors are validated once per weight (cached on ``values`` with
``sparsekern.formats.cached_repack``, so a bad hand-made index raises ValueError naming it
and a good weight costs nothing on later calls); the CSC weight is repacked once into row
strips; then one private op per layout (``sparsekern::_triton_bsr``, ``_triton_semi24``,
``_triton_csc``, schemas in sparsekern/_ops.py) writes ``out`` with its strides.
"""
from __future__ import annotations

import os
from typing import Tuple

import torch

from ..formats import cached_repack
from ..formats.base import one_check_per_call
from ..formats.validate import check_format_structure
from . import forced_backend, gpu_choice

name = "triton"

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: The layouts this backend has kernels for (a registered layout not listed here is served
#: by another backend; see docs/adding-a-layout.md).
SERVES = ("2:4", "bsr", "csc")


def _interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def available() -> Tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return False, f"triton is not importable ({type(exc).__name__}: {exc})"
    if torch.cuda.is_available() or _interpreter():
        return True, ""
    return False, "no CUDA device, and TRITON_INTERPRET=1 (Triton's CPU interpreter) is not set"


def supports(layout, values_dtype, B_dtype, device) -> bool:
    if layout not in SERVES or values_dtype not in _DTYPES or B_dtype != values_dtype:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _interpreter() and values_dtype != torch.bfloat16


def _kernels():
    from .. import triton as kernels  # defines the private ops on first use
    return kernels


def _validate_once(values, indices, offsets, M: int, K: int, layout: str) -> None:
    """Reject out-of-range indices (ValueError naming one); cached per weight."""
    def check():
        check_format_structure(values, indices, offsets, M, K, layout)
        return True

    if any(t.is_inference() for t in (values, indices, offsets)):
        check()  # inference tensors carry no version counter to key a cache on
        return
    cached_repack(values, f"triton:validated:{layout}:{M}x{K}", (indices, offsets), check)


def _row_strips(values, indices, offsets, M: int, K: int):
    kernels = _kernels()

    def build():
        return kernels.build_row_strips(values, indices, offsets, M, K)

    if any(t.is_inference() for t in (values, indices, offsets)):
        return build()
    return cached_repack(values, f"triton:csc_row_strips:{M}x{K}", (indices, offsets), build)


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out[M, N] = A @ B (+ bias[:, None]): on CUDA the fastest candidate for the call
    (gpu_choice.dispatch), else (interpreter, or a forced backend) our kernel."""
    if forced_backend() is None and out.is_cuda:
        return gpu_choice.dispatch(values, indices, offsets, int(M), int(K), layout, B, bias,
                                   out)
    return own_spmm(values, indices, offsets, M, K, layout, B, bias, out)


def own_spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out[M, N] = A @ B (+ bias[:, None]) with our kernels; ``out`` written and returned."""
    with one_check_per_call():  # the validation and the repack check the bytes once
        return _own_spmm(values, indices, offsets, M, K, layout, B, bias, out)


def _own_spmm(values, indices, offsets, M, K, layout, B, bias, out):
    M, K = int(M), int(K)
    _validate_once(values, indices, offsets, M, K, layout)
    if values.numel() == 0 or K == 0:  # nothing stored: the product is zero
        if bias is None:
            out.zero_()
        else:
            out.copy_(bias.unsqueeze(1).expand(out.shape))
        return out
    ops = _kernels()
    values, indices, offsets = values.contiguous(), indices.contiguous(), offsets.contiguous()
    if layout == "bsr":
        ops.triton_bsr(values, indices, offsets, M, K, B, bias, out)
    elif layout == "2:4":
        ops.triton_semi24(values, indices, M, K, B, bias, out)
    elif layout == "csc":
        strips = _row_strips(values, indices, offsets, M, K)
        ops.triton_csc(strips.values, strips.cols, strips.rows, strips.ptr, M, K, B, bias, out)
    else:  # select() asks supports() first; a direct call with another layout is an error
        raise ValueError(f"layout must be one of {', '.join(repr(x) for x in SERVES)} for the "
                         f"triton backend; got {layout!r}")
    return out
