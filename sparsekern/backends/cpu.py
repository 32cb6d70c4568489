"""CPU backend: binds the C++ kernels of csrc/cpu through ``torch.ops.sparsekern._spmm_cpu``."""
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
    torch.ops.sparsekern._spmm_cpu(values.contiguous(), indices.contiguous(),
                                   offsets.contiguous(), M, K, layout, B, bias, out)
    return out
