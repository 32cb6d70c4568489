"""Loads the compiled extension ``sparsekern._C`` if it is there and current.

Importing sparsekern never fails because of ``_C``: when it is missing, fails to load or
was built from other sources, one warning names the reason and the reference backend
serves every call.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings

#: Bumped whenever the C++ op signatures change; _C reports the value it was built with.
ABI_VERSION = 3

_C = None
_reason = ""
_warned = False


def try_load(name: str = f"{__package__}._C", expected_abi: int = ABI_VERSION):
    """Import the extension called ``name``. Returns (module or None, reason it is None)."""
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return None, (f"{name} is not built (install with `pip install --no-build-isolation .` "
                      f"to compile it)")
    try:
        import torch  # noqa: F401  (loads libc10/libtorch that _C links against)

        mod = importlib.import_module(name)
    except Exception as e:  # ImportError, OSError (undefined symbol), ...
        return None, f"{name} could not be imported ({type(e).__name__}: {e})"
    built = getattr(mod, "abi_version", lambda: -1)()
    if built != expected_abi:
        return None, (f"{name} is stale (built with ABI {built}, the Python package expects "
                      f"{expected_abi}); rebuild with `pip install --no-build-isolation .`")
    return mod, ""


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


_C, _reason = try_load()
