"""What a timing depends on besides the layer: the machine and the software that ran it.

These dicts are part of every latency-cache key: a measurement is reused only on the same
CPU/GPU model, thread count, the same CPU kernel path in force (the ISA the compiled kernels
run, their thread pool and the AVX-512 CSC scatter choice: SPARSEKERN_CPU_ISA, _POOL and
_SCATTER), dtype-independent software (torch, sparsekern version, the compiled extension's
content hash) and the same forced backend.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Optional, Tuple

import torch


@functools.lru_cache(maxsize=None)
def _cpu() -> dict:
    from ..timing.machine import cpu_facts
    return cpu_facts()


def kernel_path() -> dict:
    """The CPU kernel path in force now: {"isa": the ISA the compiled kernels run
    ("avx512", "avx2", "portable"; SPARSEKERN_CPU_ISA as the extension read it), "pool":
    their threads ("auto", "torch", "own"; SPARSEKERN_CPU_POOL), "scatter": the AVX-512 CSC
    scatter choice (SPARSEKERN_CPU_SCATTER as the extension read it, at import or on
    sparsekern.backends.reload_env(): "vector", "scalar", or "auto" when unset),
    "broadcast": the AVX-512 n:4 panels' weight broadcast (SPARSEKERN_CPU_BROADCAST, read
    likewise: "register", "load" or "auto"), "prefetch": the AVX-512 n:4 GEMVs' fetch of the
    next weight rows (SPARSEKERN_CPU_PREFETCH, read likewise: "always", "never" or "auto")};
    isa and pool are None without the extension.
    The same CPU runs these paths at different speeds (portable CSC is ~3x slower than
    AVX-512), so each is its own cache entry. A bad variable raises the ValueError every
    kernel call raises."""
    from ..backends import cpu_broadcast_setting, cpu_prefetch_setting, cpu_scatter_setting
    from ..timing.machine import extension_isa, extension_pool
    return {"isa": extension_isa(), "pool": extension_pool(), "scatter": cpu_scatter_setting(),
            "broadcast": cpu_broadcast_setting(), "prefetch": cpu_prefetch_setting()}


def machine_key(device: torch.device) -> dict:
    """CPU model, usable CPUs, ISA flags, the kernel path in force (:func:`kernel_path`) and
    torch threads; plus GPU name on CUDA."""
    cpu = _cpu()
    key = {"device": device.type, "cpu": cpu["model"], "arch": cpu["arch"],
           "usable_cpus": cpu["usable_cpus"], "isa": cpu["isa_flags"],
           "kernels": kernel_path(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        key["gpu"] = torch.cuda.get_device_name(index)
        key["gpu_capability"] = list(torch.cuda.get_device_capability(index))
    return key


@functools.lru_cache(maxsize=8)
def _content_hash(path: str, stat: Tuple[int, int]) -> str:
    """sha256 (first 16 hex digits) of the file's bytes; ``stat`` (size, mtime) only keys
    this memo, so a rebuilt file is hashed again, and an identical rebuild hashes equal."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def extension_build() -> Optional[str]:
    """Identity of the loaded compiled extension: its ABI version and a hash of the file's
    content (None when absent). Rebuilt with new kernels, it changes and invalidates every
    cached timing; rebuilt identically (new mtime, same bytes), it does not."""
    from .. import _extension
    C = _extension._C
    if C is None:
        return None
    path = getattr(C, "__file__", None)
    try:
        st = os.stat(path)
        return f"abi{_extension.ABI_VERSION}:sha256:{_content_hash(path, (st.st_size, st.st_mtime_ns))}"
    except (TypeError, OSError):
        return f"abi{_extension.ABI_VERSION}:unknown"


def software_key() -> dict:
    """sparsekern version, extension build, torch version and the forced backend."""
    from .. import _version
    from ..backends import forced_backend
    return {"sparsekern": _version.__version__, "extension": extension_build(),
            "torch": torch.__version__, "forced_backend": forced_backend()}
