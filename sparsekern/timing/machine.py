"""Facts about this CPU that timing depends on: usable CPUs, the last-level cache, ISA flags.

Shared by sparsekern.auto (latency tables, cache keys) and sparsekern.bench (reports); it
imports nothing from either.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
from typing import Dict, Iterator, Optional

import torch

#: ISA flags worth reporting (the kernels' dispatch cares about these).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "neon",
             "asimd", "sve")


def _cpuinfo() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Assumed last-level cache when the OS does not say (a typical server CPU's L3 slice).
DEFAULT_LLC_BYTES = 32 << 20
DEFAULT_PRIVATE_CACHE_BYTES = 1 << 20


def _size_bytes(text: str) -> Optional[int]:
    """'32768K' / '2M' / '1024' (sysfs cache sizes) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text or "")
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


@functools.lru_cache(maxsize=None)
def _data_caches(base: str = "/sys/devices/system/cpu/cpu0/cache") -> Dict[int, int]:
    """{level: bytes} of CPU 0's data/unified caches (sysfs; empty when unreadable)."""
    try:
        entries = os.listdir(base)
    except OSError:
        entries = []
    out: Dict[int, int] = {}
    for e in entries:
        if not e.startswith("index"):
            continue
        try:
            with open(os.path.join(base, e, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(base, e, "level")) as f:
                level = int(f.read().strip())
            with open(os.path.join(base, e, "size")) as f:
                size = _size_bytes(f.read()) or 0
        except (OSError, ValueError):
            continue
        out[level] = max(out.get(level, 0), size)
    return out


def last_level_cache_bytes() -> int:
    """Size of CPU 0's largest data/unified cache (sysfs), else DEFAULT_LLC_BYTES."""
    return max(_data_caches().values(), default=0) or DEFAULT_LLC_BYTES


def private_cache_bytes() -> int:
    """Size of the largest data cache below the last level (L2 on today's x86 cores), else
    DEFAULT_PRIVATE_CACHE_BYTES."""
    caches = _data_caches()
    below = [size for level, size in caches.items() if level < max(caches, default=0)]
    return max(below, default=0) or DEFAULT_PRIVATE_CACHE_BYTES


def cpu_facts() -> dict:
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:
        capability = None
    return {"model": info.get("model name") or platform.processor() or platform.machine(),
            "arch": platform.machine(), "logical_cpus": os.cpu_count(),
            "usable_cpus": usable_cpus(), "cores_per_socket": _int(info.get("cpu cores")),
            "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "torch_cpu_capability": capability, "llc_bytes": last_level_cache_bytes()}


def _int(s) -> Optional[int]:
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


def _extension_says(name: str) -> Optional[str]:
    """The compiled extension's answer to helper ``name`` as a str; None without it. A bad
    SPARSEKERN_CPU_* variable raises the ValueError every kernel call raises."""
    from .. import _extension
    C = _extension._C
    fn = getattr(C, name, None) if C is not None else None
    try:
        return str(fn()) if fn is not None else None
    except ValueError:  # the variable's error: an answer that disagreed with what runs hid it
        raise
    except Exception:  # an extension that cannot say: unknown, never a crash
        return None


def extension_isa() -> Optional[str]:
    """The CPU ISA path the compiled kernels run here ("avx512", "avx2", "portable"; it
    honours SPARSEKERN_CPU_ISA), None without the extension; ValueError (the kernels' own)
    when SPARSEKERN_CPU_ISA, _SCATTER or _BROADCAST is not a choice this CPU can run."""
    return _extension_says("cpu_isa")


def extension_pool() -> Optional[str]:
    """The threads the compiled kernels run on ("auto", "torch", "own"; it honours
    SPARSEKERN_CPU_POOL), None without the extension; ValueError (the kernels' own) when
    the variable is not a choice."""
    return _extension_says("cpu_pool")


def cpu_env_error() -> Optional[str]:
    """The error every compiled kernel call raises for a bad SPARSEKERN_CPU_ISA, _SCATTER or
    _POOL, None when they are fine: for a harness to stop before it times anything."""
    try:
        extension_isa()
        extension_pool()
    except ValueError as e:
        return str(e)
    return None




def serving_backend(layout: str, dtype: torch.dtype, device, M: int = 0, K: int = 0,
                    N: int = 0) -> str:
    """Name of the sparsekern backend that serves this call ("cpu", "reference", ...),
    recorded beside each timing; ``"error: ..."`` when the call would raise."""
    from ..backends import select
    try:
        return select(layout, dtype, dtype, torch.device(device), M, K, N).name
    except Exception as e:  # a forced backend that cannot serve: the op will raise too
        return f"error: {e}"


def is_thread_count(x) -> bool:
    """Whether ``x`` is a thread count: an int >= 1 (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the body with torch's intra-op thread count (which sparsekern's CPU kernels use
    too) set to ``threads`` (None: unchanged), restored afterwards; yields the count in
    effect. ValueError naming ``threads`` when it is not a positive int."""
    if threads is not None and not is_thread_count(threads):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield before
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
