"""Loads the compiled extension ``sparsekern._C`` if it is there and current.

Importing sparsekern never fails because of ``_C``: when it is missing, fails to load or
was built from other sources, one warning names the reason and the reference backend
serves every call.
"""
from __future__ import annotations

import warnings

#: Bumped whenever the C++ op signatures change; _C reports the value it was built with.
ABI_VERSION = 2

_C = None
_reason = ""
_warned = False


def _load():
    global _C, _reason
    import importlib.util
    if importlib.util.find_spec(f"{__package__}._C") is None:
        _reason = ("sparsekern._C is not built (install with `pip install --no-build-isolation .`"
                   " to compile it)")
        return
    try:
        import torch  # noqa: F401  (loads libc10/libtorch that _C links against)

        from . import _C as mod  # noqa: F401  (registers the sparsekern::_spmm_* ops)
    except Exception as e:  # ImportError, OSError (undefined symbol), ...
        _reason = f"sparsekern._C could not be imported ({type(e).__name__}: {e})"
        return
    built = getattr(mod, "abi_version", lambda: -1)()
    if built != ABI_VERSION:
        _reason = (f"sparsekern._C is stale (built with ABI {built}, the Python package expects "
                   f"{ABI_VERSION}); rebuild with `pip install --no-build-isolation -e .`")
        return
    _C = mod


def extension():
    """The loaded ``_C`` module, or None (after warning once with the reason)."""
    global _warned
    if _C is None and not _warned:
        _warned = True
        warnings.warn(f"sparsekern: compiled kernels unavailable, using the reference backend: "
                      f"{_reason}", RuntimeWarning, stacklevel=3)
    return _C


def unavailable_reason() -> str:
    return _reason


_load()


class python_path:
    """While active, CPU calls of spmm skip the C++ fast path and run the Python path
    (needed for backend overrides and output poisoning, which live in Python)."""

    def __enter__(self):
        if _C is not None:
            _C.python_path_acquire()
        return self

    def __exit__(self, *exc):
        if _C is not None:
            _C.python_path_release()
        return False
