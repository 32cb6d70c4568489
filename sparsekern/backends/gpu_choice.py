"""Which GPU backend serves a layout first (the Triton and CUDA issues refine this)."""
from __future__ import annotations

from typing import List


def gpu_order(layout: str) -> List[str]:
    if layout == "2:4":
        return ["cuda", "triton"]
    if layout == "csc":
        return ["cuda", "triton"]
    return ["triton", "cuda"]
