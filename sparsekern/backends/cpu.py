"""CPU backend: binds the C++ kernels of csrc/cpu through ``torch.ops.sparsekern._spmm_cpu``."""
from __future__ import annotations

from typing import Tuple

import torch

from .. import _extension

name = "cpu"

#: (layout, values dtype, B dtype) the compiled kernels handle; the rest goes elsewhere.
_SUPPORTED = {("csc", torch.float32, torch.float32)}


def available() -> Tuple[bool, str]:
    if _extension._C is None:
        return False, _extension.unavailable_reason()
    return True, ""


def supports(layout, values_dtype, B_dtype, device) -> bool:
    return device.type == "cpu" and (layout, values_dtype, B_dtype) in _SUPPORTED


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    torch.ops.sparsekern._spmm_cpu(values.contiguous(), indices.contiguous(),
                                   offsets.contiguous(), M, K, layout, B, bias, out)
    return out
