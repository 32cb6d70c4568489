"""Common base of the packed sparse formats.

A format is a plain container: three tensors (``values``, ``indices``, ``offsets``)
exactly as the op ``sparsekern::spmm`` takes them, plus the logical shape ``(M, K)``.
It holds no backend code. Backends may keep a repacked copy of a format (see
:func:`cached_repack`); that copy is stored on the ``values`` tensor so that it is
built once per weight, never per call, and dropped when the weight changes.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch

from .validate import FLOAT_DTYPES, validate_format


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
        M, K = (int(s) for s in shape)
        self.values = values
        self.indices = indices
        self.offsets = offsets
        self.shape = (M, K)
        if validate:
            validate_format(values, indices, offsets, M, K, self.layout)

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
        device = values.device
        return self._rebuild(values, self.indices.to(device), self.offsets.to(device))

    def cpu(self) -> "SparseFormat":
        return self.to("cpu")

    def cuda(self, device=None) -> "SparseFormat":
        return self.to("cuda" if device is None else device)

    def to_dense(self) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        M, K = self.shape
        return (f"{type(self).__name__}(shape=({M}, {K}), layout={self.layout!r}, "
                f"dtype={self.dtype}, device={self.device}, nnz={self.nnz}, nbytes={self.nbytes})")


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN equal to itself), any dtype, any strides."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    return torch.equal(a.reshape(-1).contiguous().view(torch.uint8),
                       b.reshape(-1).contiguous().view(torch.uint8))


def cached_repack(values: torch.Tensor, key: str, deps: Tuple[torch.Tensor, ...],
                  build: Callable[[], object]):
    """Return ``build()``, computed once per (weight, key) and cached on ``values``.

    The entry holds a snapshot of ``values`` and ``deps`` and is used only while they are
    byte for byte the same: writes the version counter does not see (``.data``, a NumPy
    view, an inference tensor's ``copy_``) rebuild it too, so it can never be stale. The
    check reads the weight once per call; ``build`` (a repack) costs more. Backends use this
    for layouts that a kernel wants (e.g. a metadata order for sparse tensor cores).
    """
    tensors = (values,) + tuple(deps)
    cache = getattr(values, "_sparsekern_repack", None)
    if cache is None:
        cache = {}
        try:
            values._sparsekern_repack = cache
        except (AttributeError, RuntimeError):  # e.g. tensors that forbid attributes
            return build()
    hit = cache.get(key)
    if hit is not None and len(hit[0]) == len(tensors) and \
            all(_same_bytes(t, s) for t, s in zip(tensors, hit[0])):
        return hit[1]
    with torch.no_grad():
        snapshot = tuple(t.detach().clone() for t in tensors)
    result = build()
    cache[key] = (snapshot, result)
    return result
