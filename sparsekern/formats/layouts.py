"""The layout registry: one :class:`Layout` object per layout, the only list of layouts.

Each format module (semi24.py, bsr.py, csc.py, ...) builds its ``Layout`` and registers it
at import; ``sparsekern.formats`` imports them all. Everything that needs "the layouts"
(the op's checks, the reference backend, ``to_sparse``, ``sparsify``, prune.convert, the
latency table, the benchmark matrix, the tests) asks this module, so a new layout is one
new format module plus its kernels (docs/adding-a-layout.md). An unknown name is a
ValueError naming the argument (:func:`get`), never a fall-through to another layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

BlockSize = Optional[Tuple[int, int]]


@dataclass(frozen=True)
class ServedAs:
    """Another layout whose kernels may run this one (no kernel of its own needed).

    Attributes:
        layout: the other layout's name (e.g. ``"2:4"`` for 1:4).
        lower: ``(values, indices, offsets, M, K) -> (values', indices', offsets')``: the same
            matrix in ``layout``'s tensors; built once per weight and cached on ``values``
            (formats.cached_repack), never per call.
        lift_grad: ``(grad', values, indices, offsets, M, K) -> grad``: a gradient for
            ``values'`` mapped back to this layout's ``values`` (of ``values``' shape).
    """

    layout: str
    lower: Callable
    lift_grad: Callable


@dataclass(frozen=True)
class Layout:
    """Everything sparsekern knows about one layout (see each format module for the tensors).

    Attributes:
        name: the ``layout`` string of the op and the API (``"2:4"``, ``"bsr"``, ``"csc"``).
        format: the :class:`~sparsekern.formats.SparseFormat` subclass: ``from_dense(W[,
            blocksize])`` packs the zeros of a dense W [M, K], ``to_dense()`` unpacks.
        check_meta: ``(values, indices, offsets, M, K) -> None``: the layout's shapes and
            dtypes of the three format tensors, O(1); raises ValueError/TypeError naming the
            tensor, its shape and what was expected. Run by every op call.
        check_structure: ``(values, indices, offsets, M, K) -> None``: reads the index
            tensors (O(nnz)) and rejects any entry a kernel could not use safely.
        coordinates: ``(values, indices, offsets, M, K) -> (row, col, pos)``: three int64
            [n] tensors, the row and column of every stored entry and its flat position in
            ``values`` (padding entries included; callers drop those outside [M, K]).
        magnitude_prune: ``(W, sparsity, blocksize) -> W'``: a copy of W [M, K] with the
            ``sparsity`` fraction of smallest-magnitude entries (blocks, groups) zeroed so
            that the zeros have this layout's pattern.
        pattern_density: ``(W, blocksize) -> float | None``: the fraction of M*K that W's
            actual zeros would store in this layout, None when W does not fit the pattern.
        nbytes: ``(M, K, stored, elem, blocksize) -> int``: bytes of the packed weight with
            ``stored`` stored values of ``elem`` bytes each (indices and offsets included);
            bytes per weight is ``nbytes / (M * K)``.
        blocked: the layout takes a ``blocksize`` (bm, bk).
        fixed_density: the stored fraction every weight of this layout has (0.5 for 2:4),
            None when it depends on the weight.
        default_max_density: the largest stored fraction at which ``sparsify`` packs a layer
            by default (None: whenever the weight fits the pattern).
        block_shapes: the block shapes the benchmarks and the latency table measure.
        served_as: a :class:`ServedAs` when a backend without a kernel for this layout may
            run it through another layout's kernel (see :func:`kernel_layout`, :func:`lower`).
        group: ``(n, m)`` for an N:M layout: at most n nonzeros in every group of m along
            K (2:4: (2, 4)); lets the search plan it for N:M pruning granularities.
        any_pattern: the layout stores any zero pattern (unstructured, like csc): every
            pruning granularity can be served by it.
        max_batch: the most columns of B (tokens) its kernels are meant for (a GEMV layout:
            sell, 2); the benchmarks and the latency table do not time it above (None: any).
    """

    name: str
    format: type
    check_meta: Callable
    check_structure: Callable
    coordinates: Callable
    magnitude_prune: Callable
    pattern_density: Callable
    nbytes: Callable
    blocked: bool = False
    fixed_density: Optional[float] = None
    default_max_density: Optional[float] = None
    block_shapes: Tuple[Tuple[int, int], ...] = field(default=())
    served_as: Optional[ServedAs] = None
    group: Optional[Tuple[int, int]] = None
    any_pattern: bool = False
    max_batch: Optional[int] = None

    def serves_batch(self, n: int) -> bool:
        """Whether ``n`` columns of B (tokens) are within :attr:`max_batch`."""
        return self.max_batch is None or n <= self.max_batch

    def holds_group(self, n: int, m: int) -> bool:
        """Every weight pruned to n:m (at most n nonzeros per m along K) fits this layout."""
        return self.group is not None and n <= self.group[0] and m % self.group[1] == 0

    def planned_density(self, pattern: str, ratio: float, shape=None,
                        blocksize=None) -> Optional[float]:
        """The stored fraction of a weight pruned to ``ratio`` in ``pattern`` when this
        layout (with ``blocksize``, for a blocked one) holds every such weight, else None.
        ``pattern``: "fine"; "block" with ``shape`` (bm, bk); "nm" with ``shape`` (n, m)
        (the ratio is then n's complement, and an N:M layout stores its fixed fraction)."""
        if pattern not in ("fine", "block", "nm"):
            raise ValueError(f"pattern must be 'fine', 'block' or 'nm', got {pattern!r}")
        if pattern == "nm":
            n, m = shape
            if self.holds_group(n, m):
                return self.fixed_density
            return n / m if self.any_pattern else None
        if self.any_pattern:
            return 1.0 - ratio
        if pattern == "block" and self.blocked and blocksize is not None and \
                tuple(int(b) for b in blocksize) == tuple(int(b) for b in shape):
            return 1.0 - ratio
        return None

    def format_names(self, blocks=None) -> Tuple[str, ...]:
        """Names of this layout's measured formats: ``"bsr16x16"`` per block shape of a
        blocked layout (``blocks``, default :attr:`block_shapes`), else just the name."""
        if not self.blocked:
            return (self.name,)
        blocks = self.block_shapes if blocks is None else blocks
        return tuple(f"{self.name}{int(b[0])}x{int(b[1])}" for b in blocks)


_REGISTRY: Dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    """Add ``layout`` (once per name); returns it."""
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a sparsekern.formats.layouts.Layout, got "
                        f"{type(layout).__name__}")
    if layout.name in _REGISTRY and _REGISTRY[layout.name] is not layout:
        raise ValueError(f"layout {layout.name!r} is already registered")
    _REGISTRY[layout.name] = layout
    return layout


def names() -> Tuple[str, ...]:
    """Every registered layout name, sorted (an order that does not depend on imports)."""
    return tuple(sorted(_REGISTRY))


def choices(extra: Tuple[str, ...] = (), last: str = ", ") -> str:
    """``"'2:4', 'bsr', 'csc'"``: the names (``extra`` first) quoted for an error message;
    ``last`` joins the last two (e.g. ``" or "``)."""
    opts = [repr(n) for n in tuple(extra) + names()]
    return opts[0] if len(opts) == 1 else ", ".join(opts[:-1]) + last + opts[-1]


def get(name, arg: str = "layout") -> Layout:
    """The registered layout called ``name``; ValueError naming ``arg`` otherwise."""
    lay = _REGISTRY.get(name) if isinstance(name, str) else None
    if lay is None:
        raise ValueError(f"{arg} must be one of {choices()}; got {name!r}")
    return lay


def all_layouts() -> Tuple[Layout, ...]:
    """Every registered layout, in the order of :func:`names`."""
    return tuple(_REGISTRY[n] for n in names())


def kernel_layout(name: str) -> str:
    """The layout whose kernel a compiled backend runs for ``name``: its ``served_as``
    layout when it has one, else itself (unregistered names are returned unchanged: the
    backends' own tables reject them)."""
    lay = _REGISTRY.get(name)
    return lay.served_as.layout if lay is not None and lay.served_as is not None else name


def lower(name: str, values, indices, offsets, M: int, K: int):
    """``(layout, values, indices, offsets)`` as :func:`kernel_layout`'s kernel takes them."""
    lay = _REGISTRY.get(name)
    if lay is None or lay.served_as is None:
        return name, values, indices, offsets
    return (lay.served_as.layout,) + tuple(lay.served_as.lower(values, indices, offsets, M, K))


def lift_grad(name: str, grad, values, indices, offsets, M: int, K: int):
    """A gradient for the lowered values (see :func:`lower`) mapped back to ``name``'s."""
    lay = _REGISTRY.get(name)
    if lay is None or lay.served_as is None:
        return grad
    return lay.served_as.lift_grad(grad, values, indices, offsets, M, K)
