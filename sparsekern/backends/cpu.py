"""CPU backend: binds the C++ kernels of csrc/cpu through ``torch.ops.sparsekern._spmm_cpu``.

The public op's CPU kernel (csrc/ops.cpp) runs these kernels directly when no override is
active; this module is the Python path's entry to the same kernels (used under
``use_backend("cpu")``, ``SPARSEKERN_BACKEND=cpu`` and output poisoning in tests).

Served cases (``_C.kernel_exists`` is the one table): every layout (2:4, bsr, csc) with
float32 B and float32, bfloat16 or float16 values (float32 output and accumulation).
Kernels: AVX-512 where the CPU and OS have it, else AVX2+FMA, else portable C++
(``SPARSEKERN_CPU_ISA=avx512|avx2|portable`` forces one), on sparsekern's own thread pool over
``torch.get_num_threads()`` threads (csrc/cpu/parallel.cpp: a call never waits for a thread
that is not running). CSC weights get a
per-weight cache on the C++ side (index check, all-finite flag, row-wise repack for N > 1),
keyed by the identity and version of their tensors (``_C.csc_cache_info()``).
"""
from __future__ import annotations

from typing import Tuple

import torch

from .. import _extension

name = "cpu"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def available() -> Tuple[bool, str]:
    if _extension._C is None:
        return False, _extension.unavailable_reason()
    return True, ""


def supports(layout, values_dtype, B_dtype, device) -> bool:
    C = _extension._C
    return (C is not None and device.type == "cpu" and
            C.kernel_exists(layout, _dtype_name(values_dtype), _dtype_name(B_dtype)))


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out [M, N] (any strides, allocated by the caller) = A @ B + bias; returns out."""
    torch.ops.sparsekern._spmm_cpu(values.contiguous(), indices.contiguous(),
                                   offsets.contiguous(), M, K, layout, B, bias, out)
    return out
