"""CPU backend: binds the C++ kernels of csrc/cpu through ``torch.ops.sparsekern._spmm_cpu``.

The public op's CPU kernel (csrc/ops.cpp) runs these kernels directly when no override is
active; this module is the Python path's entry to the same kernels (used under
``use_backend("cpu")``, ``SPARSEKERN_BACKEND=cpu`` and output poisoning in tests).

Served cases (``_C.kernel_exists`` is the one table): every layout (2:4, bsr, csc) with
float32 B and float32, bfloat16 or float16 values (float32 output and accumulation); a
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
from ..formats.semi24 import semi24_columns
from ..formats.validate import check_format_structure

name = "cpu"


def available() -> Tuple[bool, str]:
    if _extension._C is None:
        return False, _extension.unavailable_reason()
    return True, ""


def supports(layout, values_dtype, B_dtype, device) -> bool:
    C = _extension._C
    return (C is not None and device.type == "cpu" and
            C.kernel_exists(layouts.kernel_layout(layout), values_dtype, B_dtype))


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out [M, N] (any strides, allocated by the caller) = A @ B + bias; returns out."""
    layout, values, indices, offsets = layouts.lower(layout, values, indices, offsets, M, K)
    torch.ops.sparsekern._spmm_cpu(values.contiguous(), indices.contiguous(),
                                   offsets.contiguous(), M, K, layout, B, bias, out)
    return out


#: From this many columns of G on, the 2:4 backward products run as dense BLAS GEMMs of the
#: decompressed weight: at 50% density a GEMM beats the sparse kernels (measured at
#: 1536x384, N=2048: A.T @ G 2x faster dense); below it the sparse kernels win.
SEMI24_DENSE_MIN_N = 32


def _semi24_dense(values, indices, M, K):
    """The 2:4 weight as a dense float32 [M, K] (its structure checked first)."""
    check_format_structure(values, indices, torch.empty(0, dtype=torch.int32), M, K, "2:4")
    cols = semi24_columns(indices, K)
    W = torch.zeros(M, cols.shape[1] * 2 if cols.shape[1] else 0, dtype=torch.float32)
    W.scatter_(1, cols, values.float())
    return W[:, :K], cols


def spmm_transposed(values, indices, offsets, M, K, layout, G):
    """A.T @ G for G [M, N] float32 (any strides): [K, N] float32."""
    layout, values, indices, offsets = layouts.lower(layout, values, indices, offsets, M, K)
    if layout == "2:4" and G.shape[1] >= SEMI24_DENSE_MIN_N:
        W, _ = _semi24_dense(values, indices, M, K)
        return torch.mm(G.t(), W).t()  # [K, N], row-major [N, K] underneath (x's layout)
    return torch.ops.sparsekern._spmm_transposed_cpu(values.contiguous(), indices.contiguous(),
                                                     offsets.contiguous(), M, K, layout, G)


def sampled_dot(values, indices, offsets, M, K, layout, G, B):
    """(G @ B.T) at the stored entries (0 in a format's padding), in values' shape and dtype."""
    if layouts.kernel_layout(layout) != layout:  # served through another layout's kernel
        lowered = layouts.lower(layout, values, indices, offsets, M, K)
        return layouts.lift_grad(layout, sampled_dot(*lowered[1:], M, K, lowered[0], G, B),
                                 indices, K)
    if layout == "2:4" and G.shape[1] >= SEMI24_DENSE_MIN_N:
        _, cols = _semi24_dense(values, indices, M, K)
        S = torch.mm(G, B.t())  # [M, K] dense
        if K % 4 == 0:  # no padding column: every entry is a real one (no clamp, no mask)
            return S.gather(1, cols).to(values.dtype)
        out = S.gather(1, cols.clamp(max=K - 1))  # K >= 1 here (values is not empty)
        return torch.where(cols < K, out, 0.0).to(values.dtype)
    return torch.ops.sparsekern._sampled_dot_cpu(values.contiguous(), indices.contiguous(),
                                                 offsets.contiguous(), M, K, layout, G, B)
