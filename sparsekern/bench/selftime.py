"""Collect the GPU kernels' own timing tables, when their modules exist (guarded).

Other parts of sparsekern provide ``sparsekern.bench.triton_selftime.time_triton_kernels(device)``
and ``sparsekern.bench.cuda_selftime.time_cuda_kernels()``, each returning list[dict].
Whatever they return (or the reason they could not run) goes into the results JSON under
``"selftime"``.
"""
from __future__ import annotations

import importlib
from typing import Dict, Union

SOURCES = (
    ("triton", "sparsekern.bench.triton_selftime", "time_triton_kernels", True),
    ("cuda", "sparsekern.bench.cuda_selftime", "time_cuda_kernels", False),
)


def _plain(x):
    """JSON-friendly copy (tensors and other objects become numbers or strings)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def collect(device: str = "cuda") -> Dict[str, Union[list, dict]]:
    """{"triton": rows | {"error": why}, "cuda": rows | {"error": why}}."""
    out: Dict[str, Union[list, dict]] = {}
    for key, module, func, takes_device in SOURCES:
        try:
            fn = getattr(importlib.import_module(module), func)
        except Exception as e:
            out[key] = {"error": f"{module}.{func} not importable: {type(e).__name__}: {e}"}
            continue
        try:
            rows = fn(device=device) if takes_device else fn()
            out[key] = [_plain(r) for r in rows]
        except Exception as e:
            out[key] = {"error": f"{module}.{func} raised {type(e).__name__}: {e}"}
    return out
