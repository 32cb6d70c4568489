"""Facts about the machine a run measured, the thread setting, and a short calibration.

``facts()`` gathers what a reader needs to judge a number: CPU model, cores, ISA flags,
the BLAS behind torch and NumPy, thread counts, library versions, the GPU. ``set_threads``
fixes the thread count of torch, of the BLAS libraries (threadpoolctl, when installed) and
of OpenMP runtimes loaded later. ``calibrate`` measures a large GEMM (peak-ish flop/s) and
a large copy (byte/s); their ratio, the machine balance, decides which rows are memory
bound.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from typing import List, Optional

import torch

# The CPU facts timing depends on live in the shared timing package (auto uses them too).
from ..timing.load import LoadReport, detect_load  # noqa: F401  (re-exported)
from ..timing.machine import (DEFAULT_LLC_BYTES, ISA_FLAGS, cpu_facts,  # noqa: F401
                              extension_pool, last_level_cache_bytes, usable_cpus)


def torch_blas() -> dict:
    """BLAS/LAPACK torch was built with, from torch.__config__.show()."""
    cfg = torch.__config__.show()
    out = {}
    for key in ("BLAS_INFO", "LAPACK_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP"):
        m = re.search(rf"{key}=([^,\s]+)", cfg)
        if m:
            out[key.lower()] = m.group(1)
    libs = [line.strip(" -") for line in cfg.splitlines()
            if any(w in line for w in ("Math Kernel", "OpenBLAS", "MKL-DNN", "oneDNN", "OpenMP"))]
    out["libraries"] = libs
    out["parallel_info"] = torch.__config__.parallel_info()
    return out


def numpy_blas() -> dict:
    """NumPy's BLAS (numpy.show_config(mode='dicts') on NumPy >= 1.26)."""
    try:
        import numpy as np
    except ImportError:
        return {"error": "numpy not installed"}
    try:
        cfg = np.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        return {k: {kk: vv for kk, vv in v.items() if kk in ("name", "version", "openblas configuration")}
                for k, v in deps.items() if k in ("blas", "lapack")}
    except TypeError:  # old NumPy: show_config only prints
        return {"note": "numpy.show_config(mode='dicts') unavailable"}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def threadpools() -> List[dict]:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries (empty if absent)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "filepath",
            "threading_layer", "architecture")
    return [{k: v for k, v in d.items() if k in keep} for d in threadpool_info()]


def _version(pkg: str) -> Optional[str]:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "numpy": _version("numpy"),
           "triton": _version("triton"), "threadpoolctl": _version("threadpoolctl")}
    try:
        from .._version import __version__
        out["sparsekern"] = __version__
    except Exception:
        out["sparsekern"] = None
    out["git_commit"] = _git("rev-parse", "HEAD")
    return out


def _git(*args) -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        r = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def backend_facts() -> dict:
    """Which sparsekern backends are available here, and why not when not."""
    try:
        from sparsekern.backends import BACKEND_NAMES, get_backend
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    out = {}
    for name in BACKEND_NAMES:
        try:
            ok, why = get_backend(name).available()
        except Exception as e:
            ok, why = False, f"{type(e).__name__}: {e}"
        out[name] = {"available": bool(ok), "reason": why}
    return out


def gpu_facts() -> Optional[dict]:
    if not torch.cuda.is_available():
        return None
    dev = torch.cuda.current_device()
    p = torch.cuda.get_device_properties(dev)
    out = {"name": torch.cuda.get_device_name(dev), "capability": list(torch.cuda.get_device_capability(dev)),
           "memory_bytes": int(p.total_memory), "multiprocessors": int(p.multi_processor_count),
           "l2_bytes": int(getattr(p, "L2_cache_size", 0) or 0),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            out["nvidia_smi"] = r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _pool() -> Optional[str]:
    """extension_pool(), or the error of a bad SPARSEKERN_CPU_POOL as a fact (facts never
    fail; the harness stops on that error before it times anything, see bench/__main__)."""
    try:
        return extension_pool()
    except ValueError as e:
        return f"error: {e}"


def thread_facts() -> dict:
    return {"torch_threads": torch.get_num_threads(), "sparsekern_cpu_pool": _pool(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS") if k in os.environ}}


def facts(device: str = "cpu") -> dict:
    """Everything about the machine and software that a result depends on."""
    return {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(), "python_executable": sys.executable,
            "device": device, "cpu": cpu_facts(), "threads": thread_facts(),
            "torch_blas": torch_blas(), "numpy_blas": numpy_blas(),
            "threadpools": threadpools(), "versions": versions(),
            "backends": backend_facts(), "gpu": gpu_facts()}


class ThreadSetting:
    """Fix the thread count of torch, the BLAS libraries and later OpenMP runtimes.

    Use as a context manager; ``threads=None`` means all usable CPUs.
    """

    def __init__(self, threads: Optional[int] = None):
        self.threads = int(threads) if threads else usable_cpus()
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        self._limits = None
        self._prev = None

    ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

    def __enter__(self):
        self._prev = torch.get_num_threads()
        self._prev_env = {k: os.environ.get(k) for k in self.ENV}
        for k in self.ENV:
            os.environ[k] = str(self.threads)
        torch.set_num_threads(self.threads)
        try:
            from threadpoolctl import threadpool_limits
            self._limits = threadpool_limits(limits=self.threads)
        except ImportError:
            self._limits = None
        return self

    def __exit__(self, *exc):
        if self._limits is not None:
            self._limits.restore_original_limits()
        torch.set_num_threads(self._prev)
        for k, v in self._prev_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        return False


def _best_time(fn, seconds: float) -> float:
    fn()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def calibrate(device: str = "cpu", seconds: float = 0.3) -> dict:
    """Peak-ish GEMM flop/s and copy byte/s of the device, and their ratio (flop per byte)."""
    if device == "cuda":
        n, dtype, nbytes = 8192, torch.float16, 1 << 30
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda")
        dst = torch.empty_like(src)

        def sync(f):
            def g():
                f()
                torch.cuda.synchronize()
            return g
        t_mm = _best_time(sync(lambda: a @ a), seconds / 2)
        t_cp = _best_time(sync(lambda: dst.copy_(src)), seconds / 2)
    else:
        n, dtype = 1024, torch.float32
        a = torch.randn(n, n, dtype=dtype)
        src = torch.randn(1 << 24)  # 64 MiB: far larger than the last-level cache
        dst = torch.empty_like(src)
        nbytes = src.numel() * 4
        t_mm = _best_time(lambda: a @ a, seconds / 2)
        t_cp = _best_time(lambda: dst.copy_(src), seconds / 2)
    gflops = 2 * n ** 3 / t_mm / 1e9
    gbps = 2 * nbytes / t_cp / 1e9  # read + write
    return {"gemm_n": n, "gemm_dtype": str(dtype).replace("torch.", ""), "gemm_gflops": gflops,
            "copy_gbps": gbps, "balance_flop_per_byte": gflops / gbps}
