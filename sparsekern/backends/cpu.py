"""CPU backend: binds the C++ kernels of csrc/cpu through ``torch.ops.sparsekern._spmm_cpu``.

The public op's CPU kernel (csrc/ops.cpp) runs these kernels directly when no override is
active; this module is the Python path's entry to the same kernels (used under
``use_backend("cpu")``, ``SPARSEKERN_BACKEND=cpu`` and output poisoning in tests).

Served cases (``_C.kernel_exists`` is the one table): every layout (2:4, bsr, csc) with
float32 B and float32, bfloat16 or float16 values (float32 output and accumulation), and
bfloat16/float16 B with values of the same dtype (a half-precision model: the kernels run on
a float32 copy of B and the output is rounded once to B's dtype, csrc/ops.cpp); a
registered layout with ``served_as`` (1:4) runs its lowered copy through that layout's
kernel (sparsekern/formats/layouts.py: ``kernel_layout``, ``lower``).
Kernels: AVX-512 where the CPU and OS have it, else AVX2+FMA, else portable C++
(``SPARSEKERN_CPU_ISA=avx512|avx2|portable`` forces one), on sparsekern's own thread pool over
``torch.get_num_threads()`` threads (csrc/cpu/parallel.cpp: a call never waits for a thread
that is not running). CSC weights with N > 1 get a row-wise repack cached on the C++ side,
checked byte for byte against the live tensors at every call (``_C.csc_cache_info()``; see
csrc/ops.cpp). The backward ops (A.T @ G and the sampled product) run csrc/cpu/backward.cpp.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .. import _extension
from ..formats import layouts
from . import reference

name = "cpu"


def available() -> Tuple[bool, str]:
    if _extension._C is None:
        return False, _extension.unavailable_reason()
    return True, ""


def supports(layout, values_dtype, B_dtype, device) -> bool:
    C = _extension._C
    return (C is not None and device.type == "cpu" and
            C.kernel_exists(layouts.kernel_layout(layout), values_dtype, B_dtype))


def _lowered_meets_non_finite(layout, X) -> bool:
    """Whether a served layout's lowered copy would multiply X's Inf/NaN by a filler zero: the
    copy stores entries the layout does not (1:4 as 2:4 stores a zero beside each value), and
    0 * Inf is NaN where the layout's own product is finite (an unstored entry never meets X).
    Then the reference backend, which walks only the layout's own entries, serves the call."""
    return layouts.kernel_layout(layout) != layout and not bool(torch.isfinite(X).all())


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out [M, N] (any strides, allocated by the caller) = A @ B + bias; returns out."""
    if _lowered_meets_non_finite(layout, B):
        return reference.spmm(values, indices, offsets, M, K, layout, B, bias, out)
    layout, values, indices, offsets = layouts.lower(layout, values, indices, offsets, M, K)
    torch.ops.sparsekern._spmm_cpu(values.contiguous(), indices.contiguous(),
                                   offsets.contiguous(), M, K, layout, B, bias, out)
    return out


def spmm_transposed(values, indices, offsets, M, K, layout, G):
    """A.T @ G for G [M, N] (any strides): [K, N] in G's dtype."""
    if _lowered_meets_non_finite(layout, G):
        return reference.spmm_transposed(values, indices, offsets, M, K, layout, G)
    layout, values, indices, offsets = layouts.lower(layout, values, indices, offsets, M, K)
    # (2:4: a dense GEMM of the decompressed weight, or from 256 columns on AVX-512 its own
    # kernel, csrc/cpu/semi24_t.cpp; see csrc/ops.cpp.)
    return torch.ops.sparsekern._spmm_transposed_cpu(values.contiguous(), indices.contiguous(),
                                                     offsets.contiguous(), M, K, layout, G)


def sampled_dot(values, indices, offsets, M, K, layout, G, B):
    """(G @ B.T) at the stored entries (0 in a format's padding), in values' shape and dtype."""
    if layouts.kernel_layout(layout) != layout:  # served through another layout's kernel
        lowered = layouts.lower(layout, values, indices, offsets, M, K)
        return layouts.lift_grad(layout, sampled_dot(*lowered[1:], M, K, lowered[0], G, B),
                                 values, indices, offsets, M, K)
    return torch.ops.sparsekern._sampled_dot_cpu(values.contiguous(), indices.contiguous(),
                                                 offsets.contiguous(), M, K, layout, G, B)
