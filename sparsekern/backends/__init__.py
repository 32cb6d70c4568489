"""Backend choice for ``sparsekern::spmm``, in five lines:

1. ``use_backend(name)`` (this thread) or ``SPARSEKERN_BACKEND`` forces one backend, which
   raises when it cannot serve a call; otherwise:
2. a CPU call a compiled kernel serves runs in C++ straight from the dispatcher (no Python);
3. anything else runs ``select()``: the first of ``default_order(device)`` (cpu, or
   gpu_choice's order of cuda/triton) that is available and supports the call;
4. ``reference`` (pure PyTorch) serves whatever no other backend does.

``SPARSEKERN_BACKEND`` (and ``SPARSEKERN_CPU_ISA``, the CPU kernels' instruction set) is read
once at import and again on ``reload_env()`` (call it after changing the variable in a
running process), never per call: a read per call costs time and races with ``os.environ``
writes from other threads. The C++ fast path learns of 1 through ``_python_path`` (per
thread, entered by ``use_backend``) and ``_reload_env``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import List

import torch

from .. import _extension

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "SPARSEKERN_BACKEND"

_local = threading.local()
_env_value = ""  # SPARSEKERN_BACKEND as last read by reload_env()
_scatter_value = ""  # SPARSEKERN_CPU_SCATTER as the C++ side last read it (reload_env)
_broadcast_value = ""  # SPARSEKERN_CPU_BROADCAST, likewise
_prefetch_value = ""  # SPARSEKERN_CPU_PREFETCH, likewise


def reload_env() -> None:
    """Read ``SPARSEKERN_BACKEND``, ``SPARSEKERN_CPU_ISA``, ``SPARSEKERN_CPU_SCATTER``,
    ``SPARSEKERN_CPU_BROADCAST``, ``SPARSEKERN_CPU_PREFETCH`` and ``SPARSEKERN_CPU_POOL`` again
    (done once at import) and tell the C++ fast path."""
    global _env_value, _scatter_value, _broadcast_value, _prefetch_value
    _env_value = os.environ.get(ENV_VAR, "").strip()
    _scatter_value = os.environ.get("SPARSEKERN_CPU_SCATTER", "")
    _broadcast_value = os.environ.get("SPARSEKERN_CPU_BROADCAST", "")
    _prefetch_value = os.environ.get("SPARSEKERN_CPU_PREFETCH", "")
    if _extension._C is not None:
        torch.ops.sparsekern._reload_env(_env_value not in ("", "auto", "cpu"))


def cpu_scatter_setting() -> str:
    """SPARSEKERN_CPU_SCATTER as the compiled kernels read it (at import and on
    :func:`reload_env`, not now): "vector", "scalar", or "auto" when unset or "auto"; a bad
    value is returned as it is (every kernel call raises for it)."""
    return _scatter_value if _scatter_value not in ("", "auto") else "auto"


def cpu_broadcast_setting() -> str:
    """SPARSEKERN_CPU_BROADCAST as the compiled kernels read it (at import and on
    :func:`reload_env`): "register", "load", or "auto" when unset or "auto"; a bad value is
    returned as it is (every kernel call raises for it)."""
    return _broadcast_value if _broadcast_value not in ("", "auto") else "auto"


def cpu_prefetch_setting() -> str:
    """SPARSEKERN_CPU_PREFETCH as the compiled kernels read it (at import and on
    :func:`reload_env`): "always", "never", or "auto" when unset or "auto" (the AVX-512 n:4
    GEMV and small-N kernels fetch the next rows of a weight ahead only when it does not look
    cached); a bad value is returned as it is (every kernel call raises for it)."""
    return _prefetch_value if _prefetch_value not in ("", "auto") else "auto"


def _check_name(name) -> str:
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {', '.join(repr(n) for n in BACKEND_NAMES)}; "
                         f"got {name!r}")
    return name


def get_backend(name: str):
    """The backend module called ``name``."""
    return importlib.import_module(f"{__name__}.{_check_name(name)}")


def _stack() -> List[str]:
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = []
    return s


@contextlib.contextmanager
def use_backend(name: str):
    """Force every spmm call in this thread to ``name`` inside the ``with`` block."""
    _stack().append(_check_name(name))
    try:
        with _extension.python_path():
            yield
    finally:
        _stack().pop()


def forced_backend():
    """The backend forced by ``use_backend`` or ``SPARSEKERN_BACKEND``, else None."""
    s = _stack()
    if s:
        return s[-1]
    env = _env_value
    if env and env != "auto":
        if env not in BACKEND_NAMES:
            raise ValueError(f"{ENV_VAR}={env!r} is not a backend; expected one of "
                             f"{', '.join(BACKEND_NAMES)} or 'auto'")
        return env
    return None


def default_order(layout: str, device: torch.device, M: int = 0, K: int = 0, N: int = 0,
                  dtype: torch.dtype = torch.float16) -> List[str]:
    """Backends tried in order for a device when nothing is forced."""
    if device.type == "cpu":
        return ["cpu", "reference"]
    if device.type == "cuda":
        from .gpu_order import gpu_order
        return gpu_order(layout, M, K, N, dtype) + ["reference"]
    return ["reference"]


def select(layout: str, values_dtype: torch.dtype, B_dtype: torch.dtype, device: torch.device,
           M: int = 0, K: int = 0, N: int = 0):
    """The backend module that will run this call."""
    forced = forced_backend()
    if forced is not None:
        mod = get_backend(forced)
        ok, why = mod.available()
        if not ok:
            raise RuntimeError(f"backend {forced!r} was forced but is not available: {why}")
        if not mod.supports(layout, values_dtype, B_dtype, device):
            raise RuntimeError(f"backend {forced!r} does not support layout={layout!r} with values "
                               f"{values_dtype} and B {B_dtype} on {device}")
        return mod
    for bname in default_order(layout, device, M, K, N, values_dtype):
        mod = get_backend(bname)
        if mod.available()[0] and mod.supports(layout, values_dtype, B_dtype, device):
            return mod
    return get_backend("reference")


reload_env()

__all__ = ["use_backend", "get_backend", "select", "forced_backend", "reload_env",
           "BACKEND_NAMES"]
