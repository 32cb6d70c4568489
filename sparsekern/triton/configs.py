"""Tile configurations and launch heuristics shared by the Triton kernels.

Everything a kernel's autotuner may try comes from one function, :func:`kernel_configs`.
The choice depends on the *regime* of the batch dimension N (the number of activation
columns): ``"decode"`` (N <= 16, memory bound: small M tiles so enough programs stream the
weight), ``"small"`` (N <= 128) and ``"large"`` (compute bound: big tiles that feed the
tensor cores). Under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) there is a
single small configuration, so tests stay fast and nothing is benchmarked.

Split-K (several programs share one output tile, each over a slice of K, followed by a
deterministic reduction) is decided here from shapes alone by :func:`choose_split_k`, not by
the autotuner: the reduction is a second launch that the autotuner would not see.
"""
from __future__ import annotations

import functools
import itertools
import os
from typing import Dict, List, Optional

import triton

#: Element offsets at or past this need 64-bit index arithmetic in the kernels.
INT32_LIMIT = 2**31
#: Programs of one output tile may be split over K at most this many ways.
MAX_SPLIT_K = 16
#: A split must keep at least this many loop iterations per program.
MIN_STEPS_PER_SPLIT = 2
#: Multiprocessor count pretended under the interpreter (so small tests exercise split-K).
INTERPRETER_SMS = 4


def is_interpreter() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _interpreter_index_fix() -> bool:
    """Make Triton <= 3.6's interpreter run loops bounded by tensors under numpy >= 2.4.

    That interpreter keeps every scalar as a numpy array of shape (1,) and gives tensors
    ``__index__ = int(data)``; numpy 2.4 removed ``int()`` of arrays with ndim > 0 ("only
    0-dimensional arrays can be converted to Python scalars"), so ``range(lo, hi)`` over
    tensor bounds (split-K ranges, CSR/CSC pointers) fails in every kernel. Triton 3.7+
    converts ``data.squeeze()`` instead. We wrap the function that installs the patch so
    that ``__index__`` converts the single element (the interpreter's scope restores both
    patches in reverse order). Interpreter only; compiled kernels are unaffected.
    Returns True when the wrapper was installed.
    """
    try:
        import numpy as np
        from triton.runtime import interpreter as interp
    except Exception:  # noqa: BLE001 (no interpreter module: nothing to fix)
        return False
    version = tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:2])
    numpy_version = tuple(int(p) for p in np.__version__.split(".")[:2])
    original = getattr(interp, "_patch_lang_tensor", None)
    if (version > (3, 6) or numpy_version < (2, 4) or original is None
            or getattr(original, "_sparsekern_index_fix", False)):
        return False

    def index(self):
        data = np.asarray(self.handle.data)
        if data.size != 1:
            raise TypeError(f"only scalar tensors convert to an index, got shape {data.shape}")
        return int(data.reshape(-1)[0])

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", index)

    patch_lang_tensor._sparsekern_index_fix = True
    interp._patch_lang_tensor = patch_lang_tensor
    return True


if is_interpreter():
    _interpreter_index_fix()


def regime(N: int) -> str:
    """``"decode"`` for N <= 16, ``"small"`` for N <= 128, else ``"large"``."""
    if N <= 16:
        return "decode"
    if N <= 128:
        return "small"
    return "large"


def n_class(N: int) -> int:
    """Autotune key for N: the next power of two, capped, so nearby batches share a tuning."""
    return min(triton.next_power_of_2(max(1, int(N))), 4096)


@functools.lru_cache(maxsize=None)
def _sm_count_cuda(index: int) -> int:
    import torch
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def sm_count(device) -> int:
    """Multiprocessors of ``device`` (a torch.device); a small fixed number on CPU."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch
        index = device.index if device.index is not None else torch.cuda.current_device()
        return _sm_count_cuda(index)
    return INTERPRETER_SMS


#: Programs per multiprocessor a split launch aims for, per (kernel, regime). Decode is
#: memory bound: an H100 needs ~15 KB of loads in flight per SM to stream at full
#: bandwidth (Little's law). A 2:4 or BSR program moves 10-20 KB per pipelined step, so two
#: programs per SM suffice; a CSC program only ~1.3 KB (its B gather is not pipelined), so
#: CSC wants many more programs. Outside decode one wave of programs is enough.
PROGRAMS_PER_SM = {("csc", "decode"): 8, ("semi24", "decode"): 2, ("bsr", "decode"): 2}


def choose_split_k(tiles: int, k_steps: int, sms: int, kernel: str = "",
                   reg: str = "large") -> int:
    """How many ways to split K so that ``tiles`` output tiles fill ``sms`` multiprocessors.

    Args:
        tiles: programs the launch has without a split (output tiles).
        k_steps: loop iterations one unsplit program runs (K tiles, blocks or chunks).
        sms: multiprocessors of the device.
        kernel, reg: ``"bsr"``/``"semi24"``/``"csc"`` and the regime of N (:func:`regime`):
            they set the programs wanted per SM (:data:`PROGRAMS_PER_SM`, default 1).
    Returns 1 (no split) when the tiles already give at least half the programs wanted, or
    K is too short. A split costs a second launch (the reduction, a few microseconds) and
    4 * split * M * N bytes of float32 partial sums.
    """
    target = sms * PROGRAMS_PER_SM.get((kernel, reg), 1)
    if tiles <= 0 or 2 * tiles > target or k_steps < 2 * MIN_STEPS_PER_SPLIT:
        return 1
    want = -(-target // tiles)
    return max(1, min(MAX_SPLIT_K, want, k_steps // MIN_STEPS_PER_SPLIT))


#: How far past a size a kernel may form an index before masking it: a tile's padding lanes
#: (tiles are at most 512 wide) and ceil-divisions of the size by a tile.
TILE_REACH = 1024


def needs_int64(*tensors, sizes=()) -> bool:
    """True when an element offset into any of ``tensors`` (torch tensors) may reach 2^31,
    or an index along one of ``sizes`` (ints) may.

    The largest offset a kernel forms is sum((size - 1) * |stride|) (0 for empty tensors).
    Along a size the kernels form indices up to :data:`TILE_REACH` past it (padding lanes,
    masked only once formed): in 32 bits those would wrap negative and pass the mask.
    """
    if any(int(s) + TILE_REACH >= INT32_LIMIT for s in sizes):
        return True
    for t in tensors:
        if t.numel() == 0:
            continue
        if sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) >= INT32_LIMIT:
            return True
    return False


def _next_pow2_at_least_16(x: int) -> int:
    return max(16, triton.next_power_of_2(max(1, int(x))))


def _config(num_warps: int, num_stages: int, **tiles) -> triton.Config:
    return triton.Config(dict(tiles), num_warps=num_warps, num_stages=num_stages)


def _fits(BM: int, BN: int, BK: int, stages: int, elem: int = 2) -> bool:
    """Keep the accumulator in registers and the pipelined tiles in shared memory."""
    return BM * BN <= 128 * 256 and (BM * BK + BK * BN) * elem * stages <= 192 * 1024


def _bsr_configs(reg: str, bm: int, bk: int) -> List[triton.Config]:
    bm_full = _next_pow2_at_least_16(bm)
    bm_choices = {"decode": (16, 32, 64), "small": (32, 64, 128), "large": (64, 128)}[reg]
    BMs = sorted({min(t, bm_full) for t in bm_choices})
    if bk < 16:
        # Several narrow blocks share one tl.dot along K (gathered columns).
        BKs = [32, 64]
    else:
        bk_full = min(triton.next_power_of_2(bk), 128)
        BKs = sorted({bk_full} | ({64} if bk >= 128 else set()))
    BNs = {"decode": (16,), "small": (32, 64), "large": (64, 128, 256)}[reg]
    warps = {"decode": (2, 4), "small": (4,), "large": (4, 8)}[reg]
    stages = {"decode": (3, 5), "small": (3, 4), "large": (3, 4)}[reg]
    out = []
    for BM, BK, BN, w, s in itertools.product(BMs, BKs, BNs, warps, stages):
        if not _fits(BM, BN, BK, s):
            continue
        if BM * BN >= 128 * 128 and w < 8:
            continue  # large accumulators need 8 warps to stay in registers
        out.append(_config(w, s, BM=BM, BK=BK, BN=BN, GROUP_M=8))
    return out


def _semi24_configs(reg: str) -> List[triton.Config]:
    # BK counts dense K columns: BK/2 compressed values and BK/8 metadata bytes per row.
    if reg == "decode":
        # Wide K steps keep enough bytes in flight per program (memory bound).
        grid = itertools.product((16, 32), (128, 256, 512), (16,), (4,), (3, 4))
    else:
        # Not this kernel's regime (dense FLOPs plus the expansion; the cuda backend's
        # sparse tensor cores serve it): tiles whose expansion still fits in registers.
        tiles = [(32, 128, 32, 4), (64, 128, 32, 4), (64, 64, 64, 4)] if reg == "small" \
            else [(64, 64, 64, 4), (128, 64, 64, 8)]
        grid = [(BM, BK, BN, w, s) for BM, BK, BN, w in tiles for s in (3, 4)]
    return [_config(w, s, BM=BM, BK=BK, BN=BN, GROUP_M=8) for BM, BK, BN, w, s in grid]


def _csc_configs(reg: str) -> List[triton.Config]:
    # The strip height (16 rows) is fixed by the repacked format; CAP is the number of
    # stored entries expanded per step (the K extent of the one-hot tl.dot).
    if reg == "decode":
        # CAP >= 2 entries per thread makes the value/row loads wide enough for cp.async
        # (pipelined); the column loads feed the B gather and stay in registers.
        grid = [(256, 16, 2, 3), (256, 16, 4, 3), (512, 16, 4, 3), (256, 16, 4, 4)]
        return [_config(w, s, CAP=cap, BN=BN, GROUP_M=8) for cap, BN, w, s in grid]
    if reg == "small":
        grid = itertools.product((64, 128), (32, 64), (4,), (2, 3))
    else:
        grid = itertools.product((64, 128), (64, 128), (4, 8), (2, 3))
    return [_config(w, s, CAP=cap, BN=BN, GROUP_M=8) for cap, BN, w, s in grid]


#: The single configuration per kernel used under the interpreter (small tiles: fast).
_INTERPRETER = {
    "bsr": dict(BM=16, BK=16, BN=16, GROUP_M=2),
    "semi24": dict(BM=16, BK=32, BN=16, GROUP_M=2),
    "csc": dict(CAP=16, BN=16, GROUP_M=2),
}


#: Set to 0 to skip autotuning (first configuration of each list; tests use it for speed).
AUTOTUNE_ENV = "SPARSEKERN_TRITON_AUTOTUNE"


def autotune_enabled() -> bool:
    return os.environ.get(AUTOTUNE_ENV, "1").strip() != "0"


def kernel_configs(kernel: str, reg: str, bm: Optional[int] = None,
                   bk: Optional[int] = None) -> List[triton.Config]:
    """Every configuration the autotuner of ``kernel`` tries in regime ``reg``.

    Args:
        kernel: ``"bsr"``, ``"semi24"`` or ``"csc"``.
        reg: ``"decode"``, ``"small"`` or ``"large"`` (see :func:`regime`).
        bm, bk: the BSR block shape (BSR only).
    """
    if kernel not in _INTERPRETER:
        raise ValueError(f"kernel must be one of {sorted(_INTERPRETER)}, got {kernel!r}")
    if reg not in ("decode", "small", "large"):
        raise ValueError(f"reg must be 'decode', 'small' or 'large', got {reg!r}")
    if is_interpreter():
        return [_config(1, 1, **_INTERPRETER[kernel])]
    if kernel == "bsr":
        return _bsr_configs(reg, int(bm), int(bk))
    if kernel == "semi24":
        return _semi24_configs(reg)
    return _csc_configs(reg)


def smallest_tile(kernel: str, reg: str, key: str, bm: Optional[int] = None,
                  bk: Optional[int] = None) -> int:
    """The smallest value of tile parameter ``key`` among the configurations (for split-K)."""
    return min(int(c.kwargs[key]) for c in kernel_configs(kernel, reg, bm, bk))


_AUTOTUNERS: Dict[tuple, object] = {}


def autotuned(kernel_fn, kernel: str, reg: str, key: List[str], bm: Optional[int] = None,
              bk: Optional[int] = None):
    """``triton.autotune`` of ``kernel_fn`` over :func:`kernel_configs`, built once and cached."""
    cache_key = (kernel, reg, None if bm is None else int(bm), None if bk is None else int(bk),
                 is_interpreter(), autotune_enabled())
    tuner = _AUTOTUNERS.get(cache_key)
    if tuner is None:
        cfgs = kernel_configs(kernel, reg, bm, bk)
        if not autotune_enabled():
            cfgs = cfgs[:1]
        tuner = triton.autotune(configs=cfgs, key=key)(kernel_fn)
        _AUTOTUNERS[cache_key] = tuner
    return tuner


def tuned_config(kernel: str, reg: str, bm: Optional[int] = None,
                 bk: Optional[int] = None) -> Optional[str]:
    """The configuration the autotuner last chose for ``kernel`` in ``reg`` (None if unused)."""
    tuner = _AUTOTUNERS.get((kernel, reg, bm, bk, is_interpreter(), autotune_enabled()))
    best = getattr(tuner, "best_config", None)
    return None if best is None else str(best)
