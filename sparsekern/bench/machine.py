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
import functools
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional

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


def _size_bytes(text: str) -> Optional[int]:
    """'32768K' / '2M' / '1024' (sysfs cache sizes) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text or "")
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


@functools.lru_cache(maxsize=None)
def last_level_cache_bytes() -> int:
    """Size of CPU 0's largest data/unified cache (sysfs), else DEFAULT_LLC_BYTES."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = os.listdir(base)
    except OSError:
        entries = []
    for e in entries:
        if not e.startswith("index"):
            continue
        try:
            with open(os.path.join(base, e, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(base, e, "size")) as f:
                best = max(best, _size_bytes(f.read()) or 0)
        except OSError:
            continue
    return best or DEFAULT_LLC_BYTES


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
        import sparsekern
        out["sparsekern"] = sparsekern.__version__
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


def thread_facts() -> dict:
    return {"torch_threads": torch.get_num_threads(),
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
