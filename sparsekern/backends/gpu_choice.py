"""Which kernel serves a GPU call: the fastest candidate, measured once per shape.

Candidates per layout (on CUDA tensors, nothing forced):

* ``2:4``: ``cuda`` (our mma.sp kernel), ``triton`` (our compressed-load kernel),
  ``torch24`` (torch's ``to_sparse_semi_structured``: cuSPARSELt/CUTLASS) and ``dense``
  (cuBLAS on the densified weight);
* ``bsr``: ``triton`` and ``dense``; ``csc``: ``cuda`` (EIE-style), ``triton`` and ``dense``.

:func:`dispatch` (called by the cuda and triton backends' ``spmm``) looks the call up by
:func:`choice_key` (layout, M, K, N bucket, dtype, device, and for BSR/CSC the block shape
and density bucket). On a miss it times every candidate on the call's own weight and B,
once, into scratch outputs, and caches the *name* of the fastest: the cache holds a choice
of kernel, never results. A candidate that raises, or whose output differs from cuBLAS's
(relative error over 1e-2), is left out. ``SPARSEKERN_GPU_MEASURE=0`` turns measuring off:
then the static choice (:func:`static_choice`: always one of our kernels) serves. While a
CUDA graph is being captured nothing is measured and the alternatives are not used.

Never a wrong answer: ``dense`` and ``torch24`` run only when B is all finite (with NaN/Inf
in B, only stored entries may meet them, which a densified weight cannot honour; the check
is part of what is timed), and any error in an alternative falls back to our kernel.
``use_backend(...)`` bypasses all of this (tests pin a kernel that way).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .gpu_order import gpu_order, static_order  # noqa: F401  (gpu_order re-exported)

MEASURE_ENV = "SPARSEKERN_GPU_MEASURE"
GPU_BACKENDS = ("cuda", "triton")
CANDIDATES = {"2:4": ("cuda", "triton", "torch24", "dense"),
              "bsr": ("triton", "dense"),
              "csc": ("cuda", "triton", "dense")}
#: Largest relative difference from cuBLAS a candidate may show at measurement.
AGREEMENT_TOL = 1e-2

_choices: Dict[Tuple, str] = {}
_lock = threading.Lock()


def n_regime(N: int) -> str:
    """``"decode"`` (N <= 16), ``"small"`` (N <= 128) or ``"large"``."""
    return "decode" if N <= 16 else "small" if N <= 128 else "large"


def n_bucket(N: int) -> int:
    """N itself up to 16 (each decode size is its own case), else the next power of two."""
    N = int(N)
    return N if N <= 16 else 1 << (N - 1).bit_length()


def weight_class(layout: str, values: torch.Tensor, M: int, K: int) -> Tuple:
    """What besides the shape sets a kernel's speed: BSR block shape, stored density."""
    if layout == "2:4":
        return ()
    stored = values.numel()
    density = stored / max(1, M * K)
    block = tuple(values.shape[1:]) if layout == "bsr" else ()
    return block + (round(density * 20) / 20,)


def choice_key(layout: str, M: int, K: int, N: int, dtype: torch.dtype, device: torch.device,
               wclass: Tuple = ()) -> Tuple:
    """The key a measured choice is cached under."""
    return (layout, int(M), int(K), n_bucket(N), str(dtype), str(device), tuple(wclass))


def static_choice(layout: str, N: int) -> str:
    """The candidate used when measuring is off: our kernel for the layout and N."""
    return static_order(layout, N)[0]


def measuring_enabled() -> bool:
    return os.environ.get(MEASURE_ENV, "1").strip() not in ("0", "off", "false", "no")


def forget_measurements() -> None:
    with _lock:
        _choices.clear()


def cached_choices() -> Dict[Tuple, str]:
    with _lock:
        return dict(_choices)


# --------------------------------------------------------------------------------------------
# Candidates


def _own(name: str):
    from . import get_backend
    return get_backend(name)


def _available(name: str, layout: str, values, B) -> bool:
    if name == "dense":
        return True
    if name == "torch24":
        return values.dtype in (torch.float16, torch.bfloat16) and B.dtype == values.dtype \
            and hasattr(torch.sparse, "to_sparse_semi_structured")
    mod = _own(name)
    return bool(mod.available()[0]) and mod.supports(layout, values.dtype, B.dtype, B.device)


def dense_weight(values, indices, offsets, M: int, K: int, layout: str,
                 dtype: torch.dtype) -> torch.Tensor:
    """The [M, K] dense weight in ``dtype`` (repeated CSC entries summed), cached per weight."""
    from ..formats.base import cached_repack
    from .reference import coordinates

    def build():
        row, col, pos = coordinates(values, indices, offsets, M, K, layout)
        W = torch.zeros(M, K, dtype=torch.float32, device=values.device)
        W.index_put_((row, col), values.reshape(-1)[pos].float(), accumulate=True)
        return W.to(dtype)
    return cached_repack(values, f"gpu_choice:dense:{layout}:{M}x{K}:{dtype}",
                         (indices, offsets), build)


def _semi_structured(values, indices, offsets, M: int, K: int, dtype):
    from ..formats.base import cached_repack

    def build():
        W = dense_weight(values, indices, offsets, M, K, "2:4", dtype)
        return torch.sparse.to_sparse_semi_structured(W)
    return cached_repack(values, f"gpu_choice:torch24:{M}x{K}:{dtype}", (indices,), build)


def _finite(B: torch.Tensor) -> bool:
    return bool(torch.isfinite(B).all())


def _dense_spmm(values, indices, offsets, M, K, layout, B, bias, out):
    W = dense_weight(values, indices, offsets, M, K, layout, B.dtype)
    if out.t().is_contiguous():  # out = y.T of y [N, M] (sk.linear): one GEMM writes it
        if bias is None:
            torch.mm(B.t(), W.t(), out=out.t())
        else:
            torch.addmm(bias, B.t(), W.t(), out=out.t())
    else:
        out.copy_(W @ B if bias is None else torch.addmm(bias[:, None], W, B))
    return out


def _torch24_spmm(values, indices, offsets, M, K, layout, B, bias, out):
    Ws = _semi_structured(values, indices, offsets, M, K, B.dtype)
    y = torch.nn.functional.linear(B.t().contiguous(), Ws, bias)  # [N, M]
    out.copy_(y.t())
    return out


def our_kernel(layout: str, values, B) -> str:
    """The first of our backends (static order) that serves this call."""
    for name in static_order(layout, B.shape[1]):
        if _available(name, layout, values, B):
            return name
    raise RuntimeError(f"no GPU backend serves layout={layout!r} with values {values.dtype} "
                       f"and B {B.dtype} on {B.device}")


def run_candidate(name: str, values, indices, offsets, M, K, layout, B, bias, out):
    """Run candidate ``name``; writes and returns ``out`` [M, N].

    ``dense`` and ``torch24`` defer to our kernel when B holds NaN/Inf (see module doc).
    """
    if name in ("dense", "torch24"):
        if not _finite(B):
            name = our_kernel(layout, values, B)
        else:
            fn = _dense_spmm if name == "dense" else _torch24_spmm
            return fn(values, indices, offsets, M, K, layout, B, bias, out)
    return _own(name).own_spmm(values, indices, offsets, M, K, layout, B, bias, out)


# --------------------------------------------------------------------------------------------
# Measurement


def cuda_median_ms(fn: Callable[[], object], reps: int = 10) -> float:
    """Median time of ``fn`` in ms between CUDA events (after one warm-up call)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


@dataclass
class Measurement:
    """What :func:`measure` found for one call: times (ms) and why others were left out."""
    choice: str
    times: Dict[str, float]
    excluded: Dict[str, str]


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def measure(values, indices, offsets, M, K, layout, B, bias, out,
            timer: Optional[Callable[[str, Callable[[], object]], float]] = None
            ) -> Measurement:
    """Time every available candidate on this call (scratch outputs); fastest first wins.

    B must be all finite (:func:`choose` measures only then), so that every candidate
    computes the same function and can be checked against the cuBLAS result.
    ``timer(name, fn) -> ms`` defaults to :func:`cuda_median_ms`; tests pass a fake one.
    The cuBLAS result is the yardstick of agreement (our kernels' own tests use float64).
    """
    timer = timer or (lambda name, fn: cuda_median_ms(fn))
    args = (values, indices, offsets, M, K, layout, B, bias)
    results: Dict[str, torch.Tensor] = {}
    excluded: Dict[str, str] = {}
    for name in CANDIDATES[layout]:
        if not _available(name, layout, values, B):
            excluded[name] = "unavailable"
            continue
        try:
            results[name] = run_candidate(name, *args, torch.empty_like(out))
        except Exception as e:  # noqa: BLE001 (an alternative that cannot serve: left out)
            excluded[name] = f"{type(e).__name__}: {e}"
    yardstick = results.get("dense")
    times: Dict[str, float] = {}
    for name, res in results.items():
        if name != "dense":
            if yardstick is None and name == "torch24":
                excluded[name] = "no cuBLAS result to check it against"
                continue
            diff = 0.0 if yardstick is None else _rel_diff(res, yardstick)
            if not diff <= AGREEMENT_TOL:
                excluded[name] = f"differs from cuBLAS by {diff:.2e}"
                continue
        scratch = torch.empty_like(out)
        times[name] = float(timer(name, lambda n=name: run_candidate(n, *args, scratch)))
    choice = min(times, key=times.get) if times else our_kernel(layout, values, B)
    for name in ("dense", "torch24"):  # a prepared copy of the weight that will not be used
        if name != choice:
            _drop_prepared(values, f"gpu_choice:{name}:")
    return Measurement(choice, times, excluded)


def _drop_prepared(values: torch.Tensor, prefix: str) -> None:
    from ..formats.base import drop_cached
    drop_cached(values, prefix)


def _capturing() -> bool:
    try:
        return torch.cuda.is_current_stream_capturing()
    except Exception:  # noqa: BLE001
        return False


def choose(values, indices, offsets, M, K, layout, B, bias, out, timer=None) -> str:
    """The candidate for this call: cached, else measured (when enabled), else static."""
    N = B.shape[1]
    key = choice_key(layout, M, K, N, B.dtype, B.device, weight_class(layout, values, M, K))
    with _lock:
        hit = _choices.get(key)
    if hit is not None:
        return hit
    if not measuring_enabled() or _capturing() or not _finite(B):
        # Measure on finite B only: the agreement check compares against cuBLAS.
        return our_kernel(layout, values, B)
    choice = measure(values, indices, offsets, M, K, layout, B, bias, out, timer).choice
    with _lock:
        _choices.setdefault(key, choice)
    return choice


def validate_once(values, indices, offsets, M: int, K: int, layout: str) -> None:
    """Reject out-of-range indices (ValueError naming one) before any candidate runs: the
    densified weight would silently drop them. Cached per weight (version counters)."""
    from ..formats.base import cached_repack
    from ..formats.validate import check_format_structure

    def check():
        check_format_structure(values, indices, offsets, M, K, layout)
        return True

    if any(t.is_inference() for t in (values, indices, offsets)):
        check()  # inference tensors carry no version counter to key a cache on
        return
    cached_repack(values, f"validated:{layout}:{M}x{K}", (indices, offsets), check)


def dispatch(values, indices, offsets, M, K, layout, B, bias, out):
    """Run the chosen candidate for this call (see the module docstring); returns ``out``.
    Every byte check of a cached copy in the call is done once (``one_check_per_call``)."""
    from ..formats.base import one_check_per_call
    with one_check_per_call():
        return _dispatch(values, indices, offsets, M, K, layout, B, bias, out)


def _dispatch(values, indices, offsets, M, K, layout, B, bias, out):
    validate_once(values, indices, offsets, M, K, layout)
    choice = choose(values, indices, offsets, M, K, layout, B, bias, out)
    if choice in ("dense", "torch24") and not _capturing():
        try:
            return run_candidate(choice, values, indices, offsets, M, K, layout, B, bias, out)
        except Exception:  # noqa: BLE001 (e.g. a shape torch's 2:4 cannot serve): ours
            pass
    if choice not in GPU_BACKENDS or not _available(choice, layout, values, B):
        choice = our_kernel(layout, values, B)
    return run_candidate(choice, values, indices, offsets, M, K, layout, B, bias, out)
