"""The order in which GPU backends are tried for a layout, without measurement.

Apart from sparsekern.backends.gpu_choice (which measures among candidates and calls back
into the cuda and triton backends) so that the dispatcher (sparsekern.backends) can ask for
the order without importing the module that imports it: no import cycle.
"""
from __future__ import annotations

from typing import List, Optional

import torch


def static_order(layout: str, N: Optional[int] = None) -> List[str]:
    """GPU backends, best first, without measurement (what each kernel is built for).

    bsr: triton (the cuda backend has no BSR kernel); 2:4: cuda (sparse tensor cores at
    every N); csc: cuda (EIE-style) for N <= 16, triton's row strips past decode sizes.
    """
    if layout == "bsr":
        return ["triton", "cuda"]
    if layout == "csc" and N is not None and N > 16:
        return ["triton", "cuda"]
    return ["cuda", "triton"]


def gpu_order(layout: str, M: Optional[int] = None, K: Optional[int] = None,
              N: Optional[int] = None, dtype: Optional[torch.dtype] = None) -> List[str]:
    """Backends the dispatcher tries, in order (the first that serves the call runs
    ``gpu_choice.dispatch``, which then picks among all candidates)."""
    return static_order(layout, N)
