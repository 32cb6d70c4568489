"""Common base of the packed sparse formats.

A format is a plain container: three tensors (``values``, ``indices``, ``offsets``)
exactly as the op ``sparsekern::spmm`` takes them, plus the logical shape ``(M, K)``.
It holds no backend code. Backends may keep a repacked copy of a format (see
:func:`cached_repack`); that copy is stored on the ``values`` tensor so that it is
built once per weight, never per call, and dropped when the weight changes.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Dict, Optional, Tuple

import torch

from .validate import (FLOAT_DTYPES, check_format_meta, check_format_structure,
                       validate_format)


def check_dense_weight(W: torch.Tensor, name: str = "W") -> None:
    """Reject anything that is not a 2-D floating tensor, naming what was given."""
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [M, K], got {type(W).__name__}")
    if W.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D of shape [M, K], got shape {list(W.shape)} ({W.dim()}-D)")
    if W.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {W.dtype}; expected one of float32, float16, bfloat16, float64")
    if W.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {W.layout}")
    if W.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a shape without values); packing needs "
                         f"its zeros: materialize it first (module.to_empty(device=...) and "
                         f"load its weights)")


def check_shape(shape) -> Tuple[int, int]:
    """(M, K) from ``shape``: two non-negative ints (ValueError naming ``shape`` otherwise;
    (6.7, 10), ("6", "10") and (True, 10) are not shapes)."""
    try:
        parts = tuple(shape)
    except TypeError:
        parts = None
    ok = parts is not None and len(parts) == 2 and all(
        not isinstance(s, (bool, str, float)) and hasattr(s, "__index__") for s in parts)
    if not ok or min(int(s) for s in parts) < 0:
        raise ValueError(f"shape must be (M, K), two non-negative integers, got {shape!r}")
    return int(parts[0]), int(parts[1])


class SparseFormat:
    """Base of :class:`Semi24`, :class:`BSR` and :class:`CSC`.

    Attributes:
        values, indices, offsets: the op's three format tensors (see each subclass).
        shape: ``(M, K)``, the logical dense shape (padding excluded).
        layout: the registered layout name (``"2:4"``, ``"bsr"``, ``"csc"``).
    """

    layout: str = ""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """A format is not a tensor. Defining this makes torch code that checks its tensor
        arguments with ``torch.overrides.has_torch_function`` before taking a fused path
        (nn.TransformerEncoderLayer's inference fast path reads ``linear1.weight`` directly)
        take its plain module path instead, which calls the sparse layer; a torch function
        actually given a format gets this error instead of a crash inside the fused op."""
        name = getattr(func, "__name__", str(func))
        raise TypeError(f"torch.{name} got a sparsekern {cls.__name__} format (a packed sparse "
                        f"matrix, not a tensor); use sparsekern.linear / sparsekern.spmm with "
                        f"it, or its .to_dense()")

    def __init__(self, values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                 shape: Tuple[int, int], *, validate: bool = True):
        M, K = check_shape(shape)
        self.values = values
        self.indices = indices
        self.offsets = offsets
        self.shape = (M, K)
        if validate:
            validate_format(values, indices, offsets, M, K, self.layout)

    def __getattr__(self, name: str):
        """Only for names that normal lookup did not find: an AttributeError, as ever
        (``hasattr`` and ``getattr(fmt, name, default)`` still work), whose message for a
        torch.Tensor attribute (``size``, ``t``, ``data``, ...) says that this is a packed
        format, not a tensor: code written for a dense layer's ``.weight`` (transformers'
        ``resize_token_embeddings``) reads a SparseLinear's ``.weight`` and got
        "'Semi24' object has no attribute 'size'"."""
        cls = type(self).__name__
        if name.startswith("_") or not hasattr(torch.Tensor, name):
            raise AttributeError(f"{cls!r} object has no attribute {name!r}")
        shape = self.__dict__.get("shape")  # never self.shape: no recursion before __init__
        of = f" of shape {tuple(shape)}" if shape is not None else ""
        raise AttributeError(
            f"{cls!r} object has no attribute {name!r}: it is a sparsekern {cls} "
            f"(layout {self.layout!r}{of}), a packed sparse matrix, not a torch.Tensor; this is "
            f"what a sparsekern layer's .weight (SparseLinear, SparseConv2d) returns, as the "
            f"layer's weight is packed in a sparsekern format. Get a dense tensor with "
            f".weight.to_dense() ([out, K]), or unpack the layer into an equivalent dense one "
            f"with layer.to_dense() (then prune and sparsify it again after changing it)")

    # -- plain properties -------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nbytes(self) -> int:
        """Real bytes of values + indices + offsets (padding included)."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.indices, self.offsets))

    @property
    def nnz(self) -> int:
        """Number of stored values (padding and explicit zeros included)."""
        return self.values.numel()

    @property
    def density(self) -> float:
        """Stored values over M*K (can exceed the true density for 2:4 and BSR)."""
        M, K = self.shape
        return self.nnz / max(1, M * K)

    def op_args(self):
        """The leading arguments of ``torch.ops.sparsekern.spmm`` for this weight."""
        return (self.values, self.indices, self.offsets, self.shape[0], self.shape[1], self.layout)

    def meta(self) -> Dict[str, object]:
        """Non-tensor facts needed to rebuild the format (ints and strings only)."""
        return {"layout": self.layout, "shape": list(self.shape)}

    def _rebuild(self, values, indices, offsets) -> "SparseFormat":
        return type(self)(values, indices, offsets, self.shape, validate=False)

    def to(self, *args, **kwargs) -> "SparseFormat":
        """Like ``Tensor.to``: a device moves all three tensors; a dtype converts values only.

        Converting to a lower-precision dtype keeps the pattern (stored entries that
        round to zero stay stored).
        """
        values = self.values.to(*args, **kwargs)
        if values.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{type(self).__name__}.to() would give values of dtype "
                            f"{values.dtype}; expected one of float32, float16, bfloat16, "
                            f"float64")
        device = values.device
        return self._rebuild(values, self.indices.to(device), self.offsets.to(device))

    def cpu(self) -> "SparseFormat":
        return self.to("cpu")

    def cuda(self, device=None) -> "SparseFormat":
        return self.to("cuda" if device is None else device)

    def to_dense(self) -> torch.Tensor:
        """[M, K] dense tensor equal to the packed W (the format's ``_dense``). The index
        tensors are checked first: they may have been changed in place since the format was
        built, and a bad index must be an error, never a position that wraps around."""
        M, K = self.shape
        check_format_meta(self.values, self.indices, self.offsets, M, K, self.layout)
        check_format_structure(self.values, self.indices, self.offsets, M, K, self.layout)
        return self._dense()

    def _dense(self) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        M, K = self.shape
        return (f"{type(self).__name__}(shape=({M}, {K}), layout={self.layout!r}, "
                f"dtype={self.dtype}, device={self.device}, nnz={self.nnz}, nbytes={self.nbytes})")


def scatter_entries(out: torch.Tensor, index: Tuple[torch.Tensor, ...], values: torch.Tensor,
                    keys: torch.Tensor) -> None:
    """``out[index] = values``, except that entries stored twice at one position add up.

    Every kernel and the reference backend add such entries (a format's indices may repeat:
    the op does not reject them), so a format's dense form must too, or ``to_dense()`` and
    ``spmm`` would disagree. ``keys`` [nnz] int64 numbers each position (distinct keys =
    distinct positions); unique positions are assigned, so stored values stay bit for bit.
    """
    repeated = keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()) \
        and torch.unique(keys).numel() != keys.numel()
    if repeated:
        out.index_put_(index, values, accumulate=True)
    else:
        out[index] = values


def _byte_words(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The bytes of ``a`` and ``b`` as flat tensors of one integer word type, the widest that
    tiles both (int64 when the byte count and both addresses allow, down to uint8): a
    compare then writes 1/8 of the flags a byte-wise one would."""
    fa = a.reshape(-1).contiguous().view(torch.uint8)
    fb = b.reshape(-1).contiguous().view(torch.uint8)
    for dt, size in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2)):
        if fa.numel() % size == 0 and fa.data_ptr() % size == 0 and fb.data_ptr() % size == 0:
            try:
                return fa.view(dt), fb.view(dt)
            except RuntimeError:  # a storage offset the view cannot take
                continue
    return fa, fb


def _same_meta(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def _libc_memcmp():
    """libc's memcmp through ctypes, or None (then NumPy compares)."""
    try:
        import ctypes
        fn = ctypes.CDLL(None).memcmp
        fn.restype, fn.argtypes = ctypes.c_int, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
        return fn
    except (OSError, AttributeError, TypeError):
        return None


_MEMCMP = _libc_memcmp()


def _words_equal(fa: torch.Tensor, fb: torch.Tensor) -> bool:
    """Equality of two flat contiguous word tensors of one dtype and size (device sync on a
    GPU). On the CPU with memcmp (one pass, no thread pool): torch.equal runs on torch's
    intra-op pool, 10-25x slower here, and a whole scheduler slice on a busy machine."""
    if fa.is_cuda or fa.device.type != "cpu":
        return torch.equal(fa, fb)
    if _MEMCMP is not None:
        return _MEMCMP(fa.data_ptr(), fb.data_ptr(), fa.numel() * fa.element_size()) == 0
    import numpy as np
    return bool(np.array_equal(fa.numpy(), fb.numpy()))


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN equal to itself), any dtype, any strides."""
    if not _same_meta(a, b):
        return False
    return a.numel() == 0 or _words_equal(*_byte_words(a, b))


def _all_same_bytes(pairs) -> bool:
    """``_same_bytes`` of every (live, snapshot) pair, with one device sync in all: on a GPU
    each compare stays on the device and a single flag comes back (one sync per tensor costs
    more than the kernel the cache serves)."""
    if not all(_same_meta(a, b) for a, b in pairs):
        return False
    pairs = [(a, b) for a, b in pairs if a.numel()]
    if not pairs:
        return True
    if not any(a.is_cuda for a, _ in pairs):
        return all(_words_equal(*_byte_words(a, b)) for a, b in pairs)
    dev = next(a.device for a, _ in pairs if a.is_cuda)
    flags = [torch.ne(*_byte_words(a, b)).any().to(dev) for a, b in pairs]
    return not bool(torch.stack(flags).any())


class _Snapshot:
    """A byte copy of one tensor, and a number that changes whenever it is retaken."""
    __slots__ = ("copy", "gen")

    def __init__(self, live: torch.Tensor):
        with torch.no_grad():
            self.copy = live.detach().clone()
        self.gen = next(_GENERATIONS)


class _RepackCache:
    """What ``cached_repack`` keeps on a ``values`` tensor: one snapshot per argument position
    (values, then each dep; shared by every key) and, per key, the result and the snapshot
    generations it was built on. Snapshots are copies, never references to the live tensors
    (the cache lives on ``values``: no reference cycle)."""

    def __init__(self):
        self.snapshots: Dict[int, _Snapshot] = {}
        self.results: Dict[str, Tuple[Tuple[int, ...], object]] = {}


_GENERATIONS = itertools.count()
#: Per op call (see :func:`one_check_per_call`): ids of snapshots already found unchanged.
_VERIFIED: ContextVar[Optional[set]] = ContextVar("sparsekern_verified", default=None)


@contextmanager
def one_check_per_call():
    """Inside this context (one op call: a backend wraps its ``spmm`` in it), a snapshot found
    byte-identical to its tensor is not compared again: a validation and a repack of the same
    weight in one call cost one compare. Nested uses share the outer call's record."""
    if _VERIFIED.get() is not None:
        yield
        return
    token = _VERIFIED.set(set())
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def _current_snapshots(cache: _RepackCache, tensors: Tuple[torch.Tensor, ...]):
    """The snapshot of each tensor, retaken when its bytes changed. A tensor is compared by
    bytes, whatever object it is (a fresh view of the same bytes is a hit); inside
    :func:`one_check_per_call` a (snapshot, tensor) pair found equal is not compared again."""
    verified = _VERIFIED.get()
    snaps = [cache.snapshots.get(i) for i in range(len(tensors))]
    to_check = [(t, s) for t, s in zip(tensors, snaps)
                if s is not None and (verified is None or (id(s), id(t)) not in verified)]
    stale = ()
    if to_check:
        if _all_same_bytes([(t, s.copy) for t, s in to_check]):
            if verified is not None:
                verified.update((id(s), id(t)) for t, s in to_check)
        else:
            stale = {id(s) for _, s in to_check}
    out = []
    for i, (t, s) in enumerate(zip(tensors, snaps)):
        if s is None or id(s) in stale:
            s = cache.snapshots[i] = _Snapshot(t)
            if verified is not None:
                verified.add((id(s), id(t)))
        out.append(s)
    return out


def cached_repack(values: torch.Tensor, key: str, deps: Tuple[torch.Tensor, ...],
                  build: Callable[[], object]):
    """Return ``build()``, computed once per (weight, key) and cached on ``values``.

    The cache holds a byte snapshot of ``values`` and ``deps``, and a result is used only
    while they are byte for byte the same: writes the version counter does not see
    (``.data``, a NumPy view, an inference tensor's ``copy_``) rebuild it too, so it can
    never be stale. The check reads the weight once per call (one device sync on a GPU, one
    for all keys inside :func:`one_check_per_call`); ``build`` (a repack) costs more.
    Backends use this for layouts that a kernel wants (e.g. a metadata order for sparse
    tensor cores).
    """
    tensors = (values,) + tuple(deps)
    cache = getattr(values, "_sparsekern_repack", None)
    if not isinstance(cache, _RepackCache):
        cache = _RepackCache()
        try:
            values._sparsekern_repack = cache
        except (AttributeError, RuntimeError):  # e.g. tensors that forbid attributes
            return build()
    gens = tuple(s.gen for s in _current_snapshots(cache, tensors))
    hit = cache.results.get(key)
    if hit is not None and hit[0] == gens:
        return hit[1]
    result = build()
    cache.results[key] = (gens, result)
    return result


def drop_cached(values: torch.Tensor, prefix: str) -> None:
    """Forget the cached results whose key starts with ``prefix`` (snapshots stay)."""
    cache = getattr(values, "_sparsekern_repack", None)
    if isinstance(cache, _RepackCache):
        for key in [k for k in cache.results if k.startswith(prefix)]:
            cache.results.pop(key, None)
