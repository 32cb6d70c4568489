"""Backend choice for ``sparsekern::spmm``.

Default: CPU tensors go to the ``cpu`` backend (compiled C++), CUDA tensors to the best of
``cuda``/``triton`` for the layout; anything a backend does not support falls back to
``reference``. ``use_backend(name)`` (a context manager, per thread) and the
``SPARSEKERN_BACKEND`` environment variable force one backend; a forced backend that cannot
serve a call raises instead of falling back.

``SPARSEKERN_BACKEND`` is read once at import and again on ``reload_env()`` (call it after
changing the variable in a running process), never per call: a read per call costs time and
races with ``os.environ`` writes from other threads.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import List

import torch

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "SPARSEKERN_BACKEND"

_local = threading.local()
_env_value = ""  # SPARSEKERN_BACKEND as last read by reload_env()


def reload_env() -> None:
    """Read ``SPARSEKERN_BACKEND`` again (done once at import) and tell the C++ fast path."""
    global _env_value
    _env_value = os.environ.get(ENV_VAR, "").strip()
    from .. import _extension

    if _extension._C is not None:
        _extension._C.set_env_forces_python(_env_value not in ("", "auto", "cpu"))


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
    from .._extension import python_path

    _stack().append(_check_name(name))
    try:
        with python_path():
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
