"""CUDA C++ backend (csrc/cuda/): not written yet; reports itself unavailable."""
from __future__ import annotations

from typing import Tuple

name = "cuda"


def available() -> Tuple[bool, str]:
    return False, "the CUDA kernels are not part of this build yet"


def supports(layout, values_dtype, B_dtype, device) -> bool:
    return False


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    raise RuntimeError("the cuda backend is not available")
