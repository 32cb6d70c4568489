"""Which GPU backend serves a call first: a static order, refined by measurement.

Static order (what each backend is built for):

* ``bsr``: triton first (one ``tl.dot`` per stored block); the cuda backend has no BSR
  kernel.
* ``2:4``: cuda first: sparse tensor cores (``mma.sp``) halve the math at every N, which
  Triton cannot express; triton second (compressed loads expanded in registers: it wins
  only where the product is memory bound, N <= 16).
* ``csc``: cuda first (EIE-style kernel), triton second (row strips, one-hot ``tl.dot``).

Measured order: :func:`measure_order` times every GPU backend that serves a shape class on
a random weight of that class, once, and caches the order (fastest first) for the class
``(layout, dtype, M and K rounded up to powers of two, regime of N)``. :func:`gpu_order`
returns the cached order of the call's class when there is one, else the static order;
with ``SPARSEKERN_GPU_MEASURE=1`` it measures a class on its first call. Backends that
cannot serve a call are skipped by the dispatcher either way.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, List, Optional, Tuple

import torch

MEASURE_ENV = "SPARSEKERN_GPU_MEASURE"
GPU_BACKENDS = ("cuda", "triton")

_STATIC = {"bsr": ["triton", "cuda"], "2:4": ["cuda", "triton"], "csc": ["cuda", "triton"]}
_measured: Dict[Tuple, List[str]] = {}
_lock = threading.Lock()


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def n_regime(N: int) -> str:
    """``"decode"`` (N <= 16), ``"small"`` (N <= 128) or ``"large"``."""
    return "decode" if N <= 16 else "small" if N <= 128 else "large"


def shape_class(layout: str, M: int, K: int, N: int, dtype: torch.dtype) -> Tuple:
    """The key under which a measured order is cached."""
    return (layout, str(dtype), _pow2(M), _pow2(K), n_regime(N))


def static_order(layout: str, N: Optional[int] = None) -> List[str]:
    # The CUDA CSC kernel is EIE-style (batch 1 and small N); past decode sizes Triton's
    # row-strip tiles reuse each weight across many columns.
    if layout == "csc" and N is not None and N > 16:
        return ["triton", "cuda"]
    return list(_STATIC.get(layout, GPU_BACKENDS))


def remember_order(layout: str, M: int, K: int, N: int, dtype: torch.dtype,
                   order: List[str]) -> None:
    """Cache ``order`` (backend names, fastest first) for the call's shape class."""
    bad = [b for b in order if b not in GPU_BACKENDS]
    if bad:
        raise ValueError(f"order must list GPU backends from {GPU_BACKENDS}, got {order!r}")
    rest = [b for b in static_order(layout) if b not in order]
    with _lock:
        _measured[shape_class(layout, M, K, N, dtype)] = list(order) + rest


def forget_measurements() -> None:
    with _lock:
        _measured.clear()


def gpu_order(layout: str, M: Optional[int] = None, K: Optional[int] = None,
              N: Optional[int] = None, dtype: Optional[torch.dtype] = None) -> List[str]:
    """GPU backends to try, best first, for a call (shapes optional: static order without)."""
    if None in (M, K, N, dtype):
        return static_order(layout, N)
    key = shape_class(layout, M, K, N, dtype)
    with _lock:
        hit = _measured.get(key)
    if hit is not None:
        return list(hit)
    if os.environ.get(MEASURE_ENV, "").strip() == "1" and torch.cuda.is_available():
        try:
            return measure_order(layout, M, K, N, dtype)
        except Exception:  # a failed measurement never breaks dispatch
            pass
    return static_order(layout, N)


def _random_weight(layout: str, M: int, K: int, dtype, device, density: float,
                   blocksize: Tuple[int, int]):
    from ..formats import to_sparse
    g = torch.Generator(device=device).manual_seed(0)
    W = torch.randn(M, K, device=device, generator=g, dtype=torch.float32)
    if layout == "2:4":
        Kp = -(-K // 4) * 4
        score = torch.rand(M, Kp // 4, 4, device=device, generator=g)
        keep = torch.zeros_like(score, dtype=torch.bool).scatter_(2, score.argsort(-1)[..., :2],
                                                                  True)
        W = W * keep.reshape(M, Kp)[:, :K]
        return to_sparse(W.to(dtype), "2:4")
    if layout == "bsr":
        bm, bk = blocksize
        blocks = torch.rand(-(-M // bm), -(-K // bk), device=device, generator=g) < density
        mask = blocks.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
        return to_sparse((W * mask).to(dtype), "bsr", blocksize=blocksize)
    mask = torch.rand(M, K, device=device, generator=g) < density
    return to_sparse((W * mask).to(dtype), "csc")


def measure_order(layout: str, M: int, K: int, N: int, dtype: torch.dtype = torch.float16,
                  density: float = 0.1, blocksize: Tuple[int, int] = (64, 64),
                  reps: int = 20) -> List[str]:
    """Time each GPU backend on a random weight of the class; cache and return the order.

    B is ``x.T`` for x [N, K] (what ``sparsekern.linear`` passes). Each backend runs once to
    warm up (Triton compiles and autotunes there), then ``reps`` times between CUDA events;
    the median decides. A backend that is unavailable, unsupported or raises is left last.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("measure_order needs a CUDA device")
    from . import get_backend
    device = torch.device("cuda", torch.cuda.current_device())
    A = _random_weight(layout, M, K, dtype, device, density, blocksize)
    B = torch.randn(N, K, device=device, dtype=dtype).t()
    out = torch.empty(N, M, device=device, dtype=dtype).t()
    times: Dict[str, float] = {}
    for name in static_order(layout):
        mod = get_backend(name)
        if not (mod.available()[0] and mod.supports(layout, dtype, dtype, device)):
            continue
        try:
            def call():
                return mod.spmm(*A.op_args(), B, None, out)
            call()
            torch.cuda.synchronize()
            samples = []
            for _ in range(reps):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            times[name] = sorted(samples)[len(samples) // 2]
        except Exception:  # leave it out of the measured part of the order
            continue
    order = sorted(times, key=times.get)
    remember_order(layout, M, K, N, dtype, order)
    return gpu_order(layout, M, K, N, dtype)
