"""Process-wide settings that help sparse models run fast on CPU. Each is opt-in: it changes
the whole process, not only sparsekern.

``keep_freed_memory``: glibc's malloc hands a freed block of more than ~32 MB (and, once the
free memory at the top of its heap passes its trim threshold, the heap's top) back to the
kernel, so the next tensor of that size starts on fresh pages, each a page fault at first
write. Eager PyTorch frees and allocates every activation on every call: the pruned MiniLM
at 32x64 tokens took 35,000 page faults per forward (~70 ms of system time beside ~130 ms of
its own CPU time; bench/results/eager-malloc-2026-12-08). torch.compile and AOTInductor plan
their buffers and barely fault; jemalloc or tcmalloc (LD_PRELOAD) do the same job for a whole
process without code.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Callable, Optional

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: mallopt takes a C int.
_INT_MAX = 2**31 - 1
#: The largest mmap threshold glibc < 2.35 accepts on 64-bit machines.
_OLD_MMAP_MAX = 32 << 20


def _glibc_mallopt() -> Optional[Callable[[int, int], int]]:
    """glibc's mallopt, or None where the C library is not glibc (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def keep_freed_memory(max_bytes: int = 1 << 30, *,
                      _mallopt: Optional[Callable[[int, int], int]] = None) -> bool:
    """Keep up to ``max_bytes`` of freed memory in glibc's heap for reuse instead of handing
    it back to the kernel (blocks of up to ``max_bytes`` then come from the heap, not from
    mmap): the activations an eager forward frees are reused by the next forward without page
    faults. The cost: the process's resident memory may stay up to ``max_bytes`` above what
    it uses. Call it once at start-up, before the model runs.

    max_bytes: int, 0 <= max_bytes <= 2**31 - 1 (mallopt takes a C int).
    Returns True when applied; False where the C library is not glibc (nothing changed).
    Raises TypeError / ValueError (naming max_bytes) for a bad value, RuntimeError when glibc
    refuses a setting.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if not 0 <= max_bytes <= _INT_MAX:
        raise ValueError(f"max_bytes must be in [0, {_INT_MAX}] (mallopt takes a C int), "
                         f"got {max_bytes}")
    mallopt = _mallopt if _mallopt is not None else _glibc_mallopt()
    if mallopt is None:
        return False
    # Both, or neither helps: a fixed trim threshold alone turns off glibc's moving mmap
    # threshold, and every block over 128 KB is mmapped again (2.5x the faults, measured),
    # so the mmap threshold goes first. glibc before 2.35 refuses one over 32 MB (half its
    # largest heap): blocks past that stay mmapped there.
    if mallopt(_M_MMAP_THRESHOLD, max_bytes) != 1 and \
            mallopt(_M_MMAP_THRESHOLD, min(max_bytes, _OLD_MMAP_MAX)) != 1:
        raise RuntimeError(f"glibc's mallopt refused M_MMAP_THRESHOLD = {max_bytes} (max_bytes)")
    if mallopt(_M_TRIM_THRESHOLD, max_bytes) != 1:
        raise RuntimeError(f"glibc's mallopt refused M_TRIM_THRESHOLD = {max_bytes} (max_bytes)")
    return True
