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
#: glibc's largest moving mmap threshold on 64-bit machines (DEFAULT_MMAP_THRESHOLD_MAX), and
#: the largest fixed one glibc < 2.35 accepts.
_MIN_BYTES = 32 << 20


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


def keep_freed_memory(max_bytes: int = 1 << 30) -> bool:
    """Keep up to ``max_bytes`` of freed memory in glibc's heap for reuse instead of handing
    it back to the kernel (blocks of up to ``max_bytes`` then come from the heap, not from
    mmap): the activations an eager forward frees are reused by the next forward without page
    faults. The cost: the process's resident memory may stay up to ``max_bytes`` above what
    it uses. Call it once at start-up, before the model runs; it lasts for the life of the
    process (glibc has no way back to its default, moving thresholds).

    max_bytes: int, 32 MiB <= max_bytes <= 2**31 - 1. Below 32 MiB (how far glibc's own mmap
    threshold moves up) it would send more blocks to mmap than glibc does by itself, and
    fault more; above 2**31 - 1 mallopt (a C int) cannot take it.
    Returns True when applied; False where the C library is not glibc (nothing changed).
    Raises TypeError / ValueError (naming max_bytes) for a bad value, RuntimeError when glibc
    refuses a setting.
    """
    return _keep_freed_memory(max_bytes, None)


def _keep_freed_memory(max_bytes: int, mallopt: Optional[Callable[[int, int], int]]) -> bool:
    """keep_freed_memory with the mallopt to call (None: glibc's, looked up here)."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if not _MIN_BYTES <= max_bytes <= _INT_MAX:
        raise ValueError(f"max_bytes must be in [{_MIN_BYTES}, {_INT_MAX}] (at least 32 MiB, "
                         f"glibc's own largest mmap threshold: a smaller one faults more; at "
                         f"most what mallopt's C int holds), got {max_bytes}")
    if mallopt is None:
        mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    # Both, or neither helps: a fixed trim threshold alone turns off glibc's moving mmap
    # threshold, and every block over 128 KB is mmapped again (2.5x the faults, measured),
    # so the mmap threshold goes first. glibc before 2.35 refuses one over 32 MB (half its
    # largest heap): blocks past that stay mmapped there.
    if mallopt(_M_MMAP_THRESHOLD, max_bytes) != 1 and \
            mallopt(_M_MMAP_THRESHOLD, _MIN_BYTES) != 1:
        raise RuntimeError(f"glibc's mallopt refused M_MMAP_THRESHOLD = {max_bytes} (max_bytes)")
    if mallopt(_M_TRIM_THRESHOLD, max_bytes) != 1:
        raise RuntimeError(f"glibc's mallopt refused M_TRIM_THRESHOLD = {max_bytes} (max_bytes)")
    return True
