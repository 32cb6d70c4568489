"""Loads the compiled extension ``sparsekern._C`` if it is there and current.

Importing sparsekern never fails because of ``_C``: when it is missing, fails to load or
was built from other sources, one warning names the reason and the reference backend
serves every call.
"""
from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import mmap
import os
import sys
import warnings

import torch  # loads libc10/libtorch that _C links against

#: Bumped whenever the C++ op signatures change; _C reports the value it was built with.
ABI_VERSION = 8

_C = None
_reason = ""
_warned = False


class Compiled:
    """The compiled helpers of ``_C`` under the names they had as pybind11 functions; each
    calls a torch op (csrc/ops.cpp; schemas in sparsekern/_ops.py). ``_C`` itself is an
    empty module built against Python's stable ABI: importing it registers the kernels."""

    def __init__(self, module):
        self.module = module
        self.__file__ = getattr(module, "__file__", None)

    @staticmethod
    def abi_version() -> int:
        return torch.ops.sparsekern._abi_version()

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def kernel_exists(layout: str, values_dtype, B_dtype) -> bool:
        """Whether a compiled CPU kernel serves (layout, values dtype, B dtype); dtypes as
        torch.dtype or their names ("float32"). Cached: the answer never changes."""
        return torch.ops.sparsekern._kernel_exists(layout, _dtype(values_dtype), _dtype(B_dtype))

    @staticmethod
    def cpu_isa() -> str:
        """Instruction set the CPU kernels use: 'avx512', 'avx2' or 'portable'
        (SPARSEKERN_CPU_ISA as read at import or by sparsekern.backends.reload_env()); a bad
        SPARSEKERN_CPU_ISA, _SCATTER or _BROADCAST raises the ValueError every kernel call
        raises."""
        return torch.ops.sparsekern._cpu_isa()

    @staticmethod
    def cpu_pool() -> str:
        """Threads the CPU kernels run on: 'auto' (torch's intra-op threads; sparsekern's own
        pool for a while after they stalled a call), 'torch' or 'own' (SPARSEKERN_CPU_POOL as
        read at import or by sparsekern.backends.reload_env())."""
        return torch.ops.sparsekern._cpu_pool()

    @staticmethod
    def cpu_has_avx2() -> bool:
        return torch.ops.sparsekern._cpu_has_avx2()

    @staticmethod
    def cpu_has_avx512() -> bool:
        return torch.ops.sparsekern._cpu_has_avx512()

    @staticmethod
    def csc_cache_info():
        """(cached CSC weights, bytes held by their row-wise repacks and snapshots)."""
        return tuple(torch.ops.sparsekern._csc_cache_info())

    @staticmethod
    def csc_cache_clear() -> None:
        torch.ops.sparsekern._csc_cache_clear()


def _dtype(d):
    if isinstance(d, torch.dtype):
        return d
    got = getattr(torch, str(d), None)
    if not isinstance(got, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype or its name (e.g. 'float32'), got {d!r}")
    return got


def _find(name: str):
    """The spec of extension ``name``, preferring the abi3 build; (spec, reason if unusable)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None, (f"{name} is not built (install with `pip install --no-build-isolation .` "
                      f"to compile it)")
    origin = spec.origin or ""
    if ".cpython-" in os.path.basename(origin):
        # A build from before _C used the stable ABI: its registrations clash with _ops
        # (loading it would abort the process). An abi3 build beside it is the current one.
        abi3 = os.path.join(os.path.dirname(origin), name.rsplit(".", 1)[-1] + ".abi3.so")
        if not os.path.exists(abi3):
            return None, (f"{name} is stale ({origin} predates the abi3 build); rebuild with "
                          f"`pip install --no-build-isolation .`")
        spec = importlib.util.spec_from_file_location(name, abi3)
    return spec, ""


_ABI_MARKER = b"sparsekern-abi-version="


def file_abi(path: str):
    """The ABI version written into the library file at ``path`` (csrc/ops.cpp
    sparsekern_abi_marker), or None when it has none (a build from before the marker) or
    cannot be read. Read from the bytes, without loading the library."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            i = m.find(_ABI_MARKER)
            if i < 0:
                return None
            j = m.find(b";", i, i + 64)
            return int(m[i + len(_ABI_MARKER):j]) if j > 0 else None
    except (OSError, ValueError):
        return None


def try_load(name: str = f"{__package__}._C", expected_abi: int = ABI_VERSION):
    """Import the extension called ``name``. Returns (Compiled or None, reason it is None).

    A build of another ABI is never loaded: loading registers its kernels, which would then
    clash with the schemas (sparsekern/_ops.py) or serve calls with stale code."""
    spec, why = _find(name)
    if spec is None:
        return None, why
    if name not in sys.modules and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
        on_file = file_abi(spec.origin)
        if on_file != expected_abi:
            built = "no ABI marker" if on_file is None else f"ABI {on_file}"
            return None, (f"{name} is stale ({spec.origin} was built with {built}, the Python "
                          f"package expects ABI {expected_abi}); rebuild with "
                          f"`pip install --no-build-isolation .`")
    try:
        mod = sys.modules.get(name)
        if mod is None:
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
    except Exception as e:  # ImportError, OSError (undefined symbol), ...
        sys.modules.pop(name, None)
        return None, f"{name} could not be imported ({type(e).__name__}: {e})"
    from . import _ops  # noqa: F401  (the schemas; _C registered kernels for them)

    try:
        built = torch.ops.sparsekern._abi_version()
    except (RuntimeError, NotImplementedError):  # no kernel: not a sparsekern _C
        built = -1
    if built != expected_abi:
        return None, (f"{name} is stale (built with ABI {built}, the Python package expects "
                      f"{expected_abi}); rebuild with `pip install --no-build-isolation .`")
    return Compiled(mod), ""


def extension():
    """The loaded ``_C`` helpers (Compiled), or None (after warning once with the reason)."""
    global _warned
    if _C is None and not _warned:
        _warned = True
        warnings.warn(f"sparsekern: compiled kernels unavailable, using the reference backend: "
                      f"{_reason}", RuntimeWarning, stacklevel=3)
    return _C


def unavailable_reason() -> str:
    return _reason


class python_path:
    """While active, this thread's CPU calls of spmm skip the C++ fast path and run the Python
    path (needed for backend overrides and output poisoning, which live in Python)."""

    def __enter__(self):
        if _C is not None:
            torch.ops.sparsekern._python_path(1)
        return self

    def __exit__(self, *exc):
        if _C is not None:
            torch.ops.sparsekern._python_path(-1)
        return False


_C, _reason = try_load()
from . import _ops  # noqa: E402,F401  (the schemas, also when _C is missing)
from . import _compile_cache  # noqa: E402

# torch.compile's on-disk caches must not serve graphs traced through another build.
_compile_cache.install(_C.__file__ if _C is not None else None)
