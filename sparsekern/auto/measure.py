"""Measure one layer signature: dense, and every format across a grid of sparsities.

For a signature (sparsekern.auto.signature) a random weight of the layer's shape is pruned
by magnitude (sparsekern.bench.magnitude) to each grid point — 2:4, bm x bk blocks at each
sparsity for every BSR block shape, unstructured at each sparsity for CSC — packed into a
SparseLinear / SparseConv2d, and timed against the dense layer with the benchmark
harness's rules (sparsekern.bench.timing: interleaved rounds and medians on the CPU, CUDA
events on a GPU). The stored fraction of each pruned weight ("density") is recorded
exactly, from the packed pattern.

The cache state a layer is timed in follows its model (``context``): "warm" when the
weights the model streams through (its parameters and buffers, less embedding tables, of
which a call reads a few rows: :func:`streamed_bytes`) fit in a core's private cache (L2;
run back to back, every layer finds its weights there); "llc" when they fit in the
last-level cache but not in L2 (inside the model the other layers evict a layer's weights
from L2 but not from the LLC: each sample is preceded by a read of twice L2's size);
"cold" when they do not fit in the LLC either (each sample is preceded by a read of 1.5x
the LLC; from LLC_LIGHT of the LLC on, and only partly up to LLC_HEAVY: see
:func:`cold_share`). The flush only reads
(sparsekern.timing.CacheFlusher): the lines it leaves are clean, as a real model's are.
The time a model spends outside its layers is timed warm in every context: it works on
the activations the layer before it just wrote. Pruning shrinks what a model streams, so
a "cold" model can become an "llc" one: its table then also times its layers "llc"
(sparsekern.auto.table.LatencyTable.light), and a plan's prediction mixes the two by the
bytes the plan streams. Measured on all-MiniLM-L6-v2 (43 MB streamed), 1 sentence, 2
threads: with 105 MB of LLC (Intel) the sum of its layers timed "warm" predicted the model
22-31% fast, "cold" 39-41% slow, "llc" 10-13% fast; with 32 MB (Zen 5) "llc" predicted it
14% fast and "cold" 7-8% slow (a flush that wrote its buffer, and an outside time taken
after it, had said 35-45% slow), and with every layer at 90% CSC (6.5 MB) "llc" +1%,
"cold" +45%.
On a GPU the timer always flushes L2 (sparsekern.timing.time_cuda).

Every point is timed **in alternation with the dense layer** over several rounds
(sparsekern.timing.time_paired: dense, point, dense, point ...), and its figure is its
median time. A point whose per-round ratio to dense spreads wider than the tolerance is
re-timed; one that stays unstable gets status ``"unstable"``: no ``median_s``, and
``model_s``, the time the bytes-bound model predicts (dense time x the bytes the sparse
layer moves / the bytes the dense layer moves), which the choice then uses and says so —
where the dense layer is memory bound (:func:`memory_bound`); on a compute-bound layer the
point is left unpredicted, so nothing is chosen on it.
Nothing is cached as "slow" from a single call: a point that is slow is slow in every
round. Dense's own time, which every figure is compared with, gets the same care: when its
samples spread or are whole scheduler slices it is re-timed alone, and when it stays
unstable its fastest sample stands in (understating dense, so no format looks faster than
it is), the entry says so and is not cached (:func:`settle_dense`). A point's stored ratio
is always one to the dense time stored beside it: when dense was re-timed, or the dense
samples a point was paired with were outliers, it is the point's median over dense's, and
the point's reason says so (:func:`stored_ratio`).

A format that only the reference backend (the pure-PyTorch oracle) would serve here is
not timed (status ``"no-kernel"``): the oracle is never meant to be fast, and it can take
seconds per call. Neither is a GEMV layout (``Layout.max_batch``, sell) for a layer that
multiplies more tokens at once (status ``"not-timed"``).

:func:`recheck_entry` re-times a few points of a cached entry (paired with dense, the same
way) and says whether their ratios to dense still agree within a stated tolerance
(sparsekern.auto.table reuses a cached entry only then).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..formats import layouts as layout_registry
from ..timing.load import detect_load, physical_floor_s
from ..timing.machine import (is_thread_count, last_level_cache_bytes, private_cache_bytes,
                              serving_backend, torch_threads)
from ..timing.paired import BUSY_STALL_FACTOR, PairedSettings, time_paired
from ..timing.timers import (CacheFlusher, TimerSettings, time_blocks, time_cuda,
                             time_interleaved)
from .formats import DENSE, FormatSpec, default_blocks, format_specs, parse_format
from .patterns import pattern_densities
from .signature import LayerSig

#: Bumped when the way a table is measured changes (part of the cache key). 6: a point's
#: stored ratio is one to the stored dense time (:func:`stored_ratio`); entries of 5 could
#: hold a paired ratio to rejected dense samples, which the cache reads as damaged.
METHOD_VERSION = 7
#: 7: an unstable point of a compute-bound layer (:data:`MODEL_MAX_INTENSITY`) gets no
#: bytes-bound prediction.

#: The bytes-bound model predicts an unstable point only where the dense layer is memory
#: bound: at most this many FLOPs per byte it moves (weight, input and output; ~4-8 tokens of
#: a large layer). Beyond it time follows the FLOPs at each kernel's own efficiency, which
#: bytes do not tell: under load (a busy core, 2 threads), MiniLM's 384x1536 layer at 384
#: tokens was predicted 0.89x dense for CSC at 50% from a stalled dense time, and runs 1.43x
#: dense on a quiet machine.
MODEL_MAX_INTENSITY = 4.0

#: Cache states a layer can be timed in (see the module docstring); "auto" picks one from
#: the model's size.
CONTEXTS = ("warm", "llc", "cold")
#: A model whose streamed bytes (:func:`streamed_bytes`) take at most this fraction of L2
#: is "warm" ...
WARM_FRACTION = 0.75
#: ... and up to this fraction of the last-level cache "llc"; from there to LLC_HEAVY the
#: model's calls run between "llc" and "cold" (:func:`cold_share`), and from LLC_HEAVY on
#: "cold". Measured on all-MiniLM-L6-v2 at 1 sentence, 2 threads, a 32 MB L3 (Zen 5; the
#: model back to back against the "llc" and "cold" sums of its layers; share = how far
#: from the "llc" sum to the "cold" one the model ran): CSC at 90% / 70% (6.5 / 19 MB
#: streamed, 0.2 / 0.6 of the LLC) and 2:4 everywhere (23 MB, 0.72) ran as "llc" predicted
#: (+0-7%; "cold" said +17-45%), CSC at 50% (32 MB, 1.0) at a share of ~0.5, the dense
#: model (43 MB, 1.34) at ~0.65. With a 105 MB LLC (Intel) the dense model ran as "llc"
#: predicted (-10 to -13%, "cold" said +39 to +41%).
LLC_LIGHT = 0.7
LLC_HEAVY = 1.7

#: Sparsities of the grid (fraction of weights removed), for BSR and CSC.
DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)

#: Timer for table entries: short (many candidates), still interleaved rounds and medians.
TABLE_TIMER = TimerSettings(min_time=0.03, min_reps=5, max_reps=100, max_candidate_time=0.4,
                            warmup_time=0.005, max_warmup_calls=3, sample_time=5e-4)
#: Paired rounds of table entries: 5 rounds, re-timed once when the ratio to dense spreads
#: more than 20% (IQR / median).
TABLE_PAIRED = PairedSettings()
#: A cached entry is reused when the re-timed ratio to dense of each re-checked point is
#: within this fraction of the cached ratio.
RECHECK_TOLERANCE = 0.25
#: A point's recorded ratio (median of per-round paired ratios) and its median time over
#: dense's median (what predictions use) are two statistics of one timing: on real entries
#: they agree within ~25%. Beyond this factor they are not of one timing: a stored entry
#: was edited (sparsekern.auto.table.entry_problem), or, while measuring, the dense samples
#: the point was paired with were not dense's time (:func:`stored_ratio`).
RATIO_SLACK = 2.0


@dataclass(frozen=True)
class Grid:
    """What a table entry measures: sparsities for BSR/CSC, BSR block shapes, layouts."""

    sparsities: Tuple[float, ...] = DEFAULT_SPARSITIES
    blocks: Optional[Tuple[Tuple[int, int], ...]] = None   # None: each layout's block_shapes
    layouts: Tuple[str, ...] = field(default_factory=layout_registry.names)  # all registered

    def __post_init__(self):
        for s in self.sparsities:
            if not 0.0 <= float(s) < 1.0:
                raise ValueError(f"grid sparsities must be in [0, 1), got {s!r}")
        bad = [l for l in self.layouts if l not in layout_registry.names()]
        if bad:
            raise ValueError(f"grid layouts must be among {layout_registry.choices()}; "
                             f"got {bad}")

    def specs(self) -> Tuple[FormatSpec, ...]:
        blocks = default_blocks() if self.blocks is None else self.blocks
        return tuple(s for s in format_specs(blocks) if s.layout in self.layouts)

    def to_key(self) -> dict:
        return {"sparsities": [float(s) for s in self.sparsities],
                "formats": [s.name for s in self.specs()], "method": METHOD_VERSION}


class _Pruner:
    """Magnitude pruning of one weight W [M, K] to many sparsities, sorting once.

    Same rule as each layout's ``magnitude_prune`` (largest |w| survive; blocks ranked by the L1
    norm; 2:4 keeps the 2 largest of every 4 along K), but one sort serves every
    sparsity of the grid instead of one top-k per point.
    """

    def __init__(self, W: torch.Tensor):
        self.W = W
        self._order: Optional[torch.Tensor] = None
        self._blocks: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor]] = {}

    def _keep_largest(self, scores: torch.Tensor, order: torch.Tensor, sparsity: float
                      ) -> torch.Tensor:
        keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        keep[order[:int(round(sparsity * scores.numel()))]] = False
        return keep.reshape(scores.shape)

    def unstructured(self, sparsity: float) -> torch.Tensor:
        if self._order is None:
            self._order = torch.argsort(self.W.abs().flatten().float())
        return self.W * self._keep_largest(self.W, self._order, sparsity).to(self.W.dtype)

    def blocks(self, sparsity: float, bm: int, bk: int) -> torch.Tensor:
        M, K = self.W.shape
        Mb, Kb = -(-M // bm), -(-K // bk)
        if (bm, bk) not in self._blocks:
            Wp = nn.functional.pad(self.W, (0, Kb * bk - K, 0, Mb * bm - M))
            norms = Wp.reshape(Mb, bm, Kb, bk).abs().float().sum(dim=(1, 3))
            self._blocks[(bm, bk)] = (norms, torch.argsort(norms.flatten()))
        norms, order = self._blocks[(bm, bk)]
        keep = self._keep_largest(norms, order, sparsity)
        mask = keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
        return self.W * mask.to(self.W.dtype)

    def prune(self, spec: FormatSpec, sparsity: float) -> torch.Tensor:
        """Sort-once paths by what the layout declares: one that stores any pattern prunes
        entries by magnitude, a blocked one prunes blocks by L1 norm (tests/auto check both
        against every registered layout's ``magnitude_prune``); any other layout (N:M)
        prunes by its own rule."""
        layout = layout_registry.get(spec.layout)
        if layout.any_pattern:
            return self.unstructured(sparsity)
        if layout.blocked:
            return self.blocks(sparsity, *spec.blocksize)
        return layout.magnitude_prune(self.W, sparsity, spec.blocksize)


def sparse_module(dense: nn.Module, spec: FormatSpec) -> nn.Module:
    """``dense`` (already pruned to spec's pattern) as a SparseLinear / SparseConv2d."""
    from ..conv import SparseConv2d
    from ..nn import SparseLinear
    cls = SparseConv2d if isinstance(dense, nn.Conv2d) else SparseLinear
    return cls.from_dense(dense, spec.layout, spec.blocksize).eval()


def pruned_copy(dense: nn.Module, W: torch.Tensor) -> nn.Module:
    """A copy of ``dense`` whose weight is the matrix W [M, K] (reshaped back)."""
    m = copy.copy(dense)  # shallow: shares nothing we modify
    m._parameters = dict(dense._parameters)
    m.weight = nn.Parameter(W.reshape(dense.weight.shape), requires_grad=False)
    return m


def synthetic_layer(sig: LayerSig, fmt: str, density: float, seed: int = 0
                    ) -> Tuple[nn.Module, torch.Tensor]:
    """(layer, input) as a table entry times them: a random layer of ``sig``'s geometry,
    magnitude-pruned to stored fraction ``density`` in format ``fmt`` ("dense", "2:4",
    "csc", "bsrBMxBK") and packed, and a random input of ``sig`` (its zero fraction)."""
    gen = torch.Generator().manual_seed(seed)
    dense = sig.build(gen)
    x = sig.example_input(gen)
    if fmt == DENSE:
        return dense, x
    spec = parse_format(fmt)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    M, K = sig.matrix_shape
    Wp = _Pruner(dense.weight.detach().reshape(M, K)).prune(spec, 1.0 - density)
    return sparse_module(pruned_copy(dense, Wp), spec), x


def module_bytes(modules) -> int:
    """Bytes of the parameters and buffers of ``modules`` (one module or an iterable),
    each tensor counted once."""
    mods = [modules] if isinstance(modules, nn.Module) else list(modules)
    seen, total = set(), 0
    for m in mods:
        for t in itertools.chain(m.parameters(), m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def streamed_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers that a call reads whole: all but the
    weights of its embedding tables (nn.Embedding, nn.EmbeddingBag), of which a call reads
    the rows of its tokens, unless another layer shares them. (MiniLM: 43 of its 91 MB.)"""
    embeddings = (nn.Embedding, nn.EmbeddingBag)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, embeddings)}
    # a table tied to another layer (a language model's output layer) is read whole
    tables -= {id(p) for m in model.modules() if not isinstance(m, embeddings)
               for p in m.parameters(recurse=False)}
    seen, total = set(tables), 0
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def cold_share(nbytes: int, llc_bytes: Optional[int] = None) -> float:
    """How far a model streaming ``nbytes`` per call runs "cold" rather than "llc": 0 up to
    LLC_LIGHT of the last-level cache (``llc_bytes``, default this machine's), 1 from
    LLC_HEAVY on, linear in between (a model a little larger than the LLC still finds part
    of its weights there)."""
    llc = float(llc_bytes if llc_bytes else last_level_cache_bytes())
    r = nbytes / llc
    return min(1.0, max(0.0, (r - LLC_LIGHT) / (LLC_HEAVY - LLC_LIGHT)))


def context_for(nbytes: int) -> str:
    """"warm" when ``nbytes`` streamed by a model fit in WARM_FRACTION of L2, "llc" when they
    run entirely from the last-level cache (:func:`cold_share` 0), else "cold"."""
    if nbytes <= WARM_FRACTION * private_cache_bytes():
        return "warm"
    return "llc" if cold_share(nbytes) == 0.0 else "cold"


_FLUSHERS: Dict[str, CacheFlusher] = {}


def _flusher(context: str) -> CacheFlusher:
    """The before-sample flush of ``context`` ("llc": L2, "cold": the LLC), made once."""
    if context not in _FLUSHERS:
        size = 2 * private_cache_bytes() if context == "llc" else 3 * last_level_cache_bytes() // 2
        _FLUSHERS[context] = CacheFlusher(size)
    return _FLUSHERS[context]


def time_jobs(jobs: Dict[str, Tuple[Callable, object]], device: torch.device,
              timer: Optional[TimerSettings] = None, context: str = "warm"
              ) -> Dict[str, dict]:
    """{name: timing summary} of each ``fn(arg)`` of ``jobs`` {name: (fn, arg)} with the
    harness's timer for ``device``, each sample starting in the cache state ``context``
    (one of CONTEXTS; CPU only: the GPU timer always flushes L2)."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    with torch.inference_mode():
        if device.type == "cuda":
            return {n: time_cuda(f, [a]) for n, (f, a) in jobs.items()}
        timer = timer or TABLE_TIMER
        if context == "warm":
            return time_blocks(jobs, timer)
        # only a sample's first call would be cold: one call per sample
        return time_interleaved(jobs, dataclasses.replace(timer, sample_time=0.0),
                                before_sample=_flusher(context))


def time_modules(fns: Dict[str, Callable], x, device: torch.device,
                 timer: Optional[TimerSettings] = None, context: str = "warm"
                 ) -> Dict[str, dict]:
    """:func:`time_jobs` of every ``fn(x)`` of ``fns`` {name: fn}."""
    return time_jobs({n: (f, x) for n, f in fns.items()}, device, timer, context)


@dataclass
class MeasureSettings:
    """How a table entry is measured.

    ``context``: the cache state layers are timed in, "warm", "llc", "cold" or "auto" (decided
    by :func:`build_table` from the model's size, see :func:`context_for`).
    ``paired``: rounds, stability tolerance and retries of the paired timing of points
    (CPU; sparsekern.timing.PairedSettings). ``timer``: whole-model and GPU timing.
    ``recheck``: points of a cached entry re-timed before it is reused (0: reuse without
    a re-check); ``recheck_tolerance``: how far (fraction) a re-timed ratio to dense may
    be from the cached one. ``threads``: the thread count new entries are timed on (None:
    torch's; :func:`for_the_load` lowers it on a busy machine); an entry records it.
    """

    grid: Grid = field(default_factory=Grid)
    timer: TimerSettings = field(default_factory=lambda: TABLE_TIMER)
    paired: PairedSettings = field(default_factory=lambda: TABLE_PAIRED)
    seed: int = 0
    context: str = "auto"
    recheck: int = 3
    recheck_tolerance: float = RECHECK_TOLERANCE
    threads: Optional[int] = None

    def __post_init__(self):
        if self.threads is not None and not is_thread_count(self.threads):
            raise ValueError(f"MeasureSettings.threads must be a positive int or None (torch's "
                             f"thread count), got {self.threads!r}")
        if self.context not in CONTEXTS + ("auto",):
            raise ValueError(f"MeasureSettings.context must be one of "
                             f"{CONTEXTS + ('auto',)}, got {self.context!r}")
        if self.recheck < 0:
            raise ValueError(f"MeasureSettings.recheck must be >= 0, got {self.recheck}")
        if not 0.0 < self.recheck_tolerance < 1.0:
            raise ValueError(f"MeasureSettings.recheck_tolerance must be in (0, 1), got "
                             f"{self.recheck_tolerance!r}")

    def resolved(self, nbytes: int) -> "MeasureSettings":
        """These settings with "auto" replaced by the context of a model of ``nbytes``."""
        if self.context != "auto":
            return self
        return dataclasses.replace(self, context=context_for(nbytes))


def measure_signature(sig: LayerSig, settings: Optional[MeasureSettings] = None) -> dict:
    """A JSON-ready latency entry of ``sig`` (the format :class:`~.table.LayerLatency` reads).

    ``{"signature", "context", "dense": {"median_s", "iqr_s", "stable", "why", ...} (see
    :func:`settle_dense`), "bytes": {"dense",
    "io"}, "formats": {name: [point, ...]}}`` with points ``{"sparsity", "density",
    "status": "ok"|"unstable"|"no-kernel"|"not-timed", "median_s", "iqr_s", "ratio", "bytes",
    "bound_s", "model_s", "backend", "reason"}``: ``median_s`` is set only for "ok"
    (measured); "unstable" points carry ``model_s`` (= ``bound_s``, the bytes-bound
    prediction; None where the layer is compute bound, :func:`memory_bound`) and why, and an
    "ok" point's reason says when its ratio is its median over dense's rather than the paired
    one (:func:`stored_ratio`); bytes are those of the packed
    weight (plus bias), "io" those of the input and output.
    """
    return measure_signatures([sig], settings)[0]


def geometry(sig: LayerSig) -> LayerSig:
    """``sig`` without its input: signatures with equal geometry share candidates."""
    return dataclasses.replace(sig, input_shape=(), input_zeros=0.0)


@dataclass
class _Point:
    spec: FormatSpec
    sparsity: float
    density: float
    module: nn.Module


def for_the_load(s: "MeasureSettings", device: str) -> "MeasureSettings":
    """``s`` for this CPU machine's load, from a 50 ms look (sparsekern.timing.detect_load):
    when busy, the stricter stall check (BUSY_STALL_FACTOR) and, unless ``s.threads`` is set,
    the threads the load leaves (its ``recommended_threads``, at most torch's count): dense
    and every candidate are then timed on cores they get, not on threads that wait for one
    (under a busy core 2-thread calls stalled on whole scheduler slices and left points
    unmeasured). Such entries are never cached (table._measure_group)."""
    if torch.device(device).type != "cpu":
        return s
    load = detect_load(window_s=0.05)
    if not load.busy:
        return s
    if s.paired.stall_factor > BUSY_STALL_FACTOR:
        s = dataclasses.replace(s, paired=dataclasses.replace(s.paired,
                                                              stall_factor=BUSY_STALL_FACTOR))
    if s.threads is None and load.recommended_threads < torch.get_num_threads():
        s = dataclasses.replace(s, threads=load.recommended_threads)
    return s


def measure_signatures(sigs: Sequence[LayerSig], settings: Optional[MeasureSettings] = None
                       ) -> List[dict]:
    """Entries (see :func:`measure_signature`) of signatures that differ only in their input.

    The pruned and packed candidates are built once and timed at every input shape.
    """
    s = settings or MeasureSettings()
    if not sigs:
        return []
    s = for_the_load(s, sigs[0].device)
    if len({geometry(g) for g in sigs}) != 1:
        raise ValueError(f"measure_signatures needs signatures of one layer geometry; got "
                         f"{[g.label() for g in sigs]}")
    base = sigs[0]
    gen = torch.Generator().manual_seed(s.seed)
    device = torch.device(base.device)
    dtype = getattr(torch, base.dtype)
    dense = base.build(gen)
    M, K = base.matrix_shape
    pruner = _Pruner(dense.weight.detach().reshape(M, K))
    points: List[_Point] = []
    for spec in s.grid.specs():
        fixed = layout_registry.get(spec.layout).fixed_density
        for sp in ((1.0 - fixed,) if fixed is not None else s.grid.sparsities):
            Wp = pruner.prune(spec, sp)
            density = pattern_densities(Wp, [spec])[spec.name]
            points.append(_Point(spec, float(sp), density, sparse_module(pruned_copy(dense, Wp),
                                                                         spec)))
    with torch_threads(s.threads) as threads:
        entries = [_time_points(sig, dense, points, s, device, dtype, gen) for sig in sigs]
    for e in entries:
        e["threads"] = threads
    return entries


def io_bytes(sig: LayerSig) -> int:
    """Bytes of the layer's input and output at ``sig``'s input shape."""
    M, K = sig.matrix_shape
    rows = sig.tokens
    return rows * (M + K) * getattr(torch, sig.dtype).itemsize


def bytes_model_s(dense_s: float, sparse_bytes: int, dense_bytes: int, io: int) -> float:
    """The bytes-bound model: the dense time scaled by the bytes the sparse layer moves
    (packed weight + input + output) over the bytes the dense layer moves."""
    return dense_s * (sparse_bytes + io) / max(1, dense_bytes + io)


def memory_bound(sig: LayerSig, dense_bytes: int, io: int) -> bool:
    """Whether the dense layer of ``sig`` does at most :data:`MODEL_MAX_INTENSITY` FLOPs per
    byte it moves (where the bytes-bound model may predict an unstable point)."""
    M, K = sig.matrix_shape
    flops = 2.0 * M * K * max(1, sig.tokens)
    return flops <= MODEL_MAX_INTENSITY * max(1, dense_bytes + io)


def dense_floor_s(sig: LayerSig, dense_bytes: int, io: int, threads: int) -> float:
    """Seconds the dense layer of ``sig`` cannot beat (sparsekern.timing.load.physical_floor_s
    of its FLOPs and bytes): lets time_paired see a dense call that waited for a core on
    every call (sparsekern.timing.paired.FLOOR_FACTOR)."""
    M, K = sig.matrix_shape
    return physical_floor_s(2.0 * M * K * max(1, sig.tokens), dense_bytes + io, threads)


def time_entry_jobs(jobs: Dict[str, Callable], x, device: torch.device, s: MeasureSettings,
                    context: str, bound_ratio: Optional[Dict[str, float]] = None,
                    dense_floor: Optional[float] = None) -> Dict[str, dict]:
    """{name: record} of every ``fn(x)`` of ``jobs`` (which includes "dense") timed in
    alternation with ``jobs["dense"]``: sparsekern.timing.time_paired records on the CPU
    (cold context: a cache flush before every sample), CUDA-event medians on a GPU
    (always stable: the GPU timer is not shared with other processes' threads).
    ``bound_ratio`` {name: bytes moved / dense's}, ``dense_floor`` (seconds): see
    time_paired (``reference_floor``)."""
    with torch.inference_mode():
        if device.type == "cuda":
            res = time_jobs({n: (f, x) for n, f in jobs.items()}, device, s.timer, context)
            d = res["dense"]["median_s"]
            return {n: dict(r, ratio=r["median_s"] / d, stable=True, why="")
                    for n, r in res.items()}
        before = None if context == "warm" else _flusher(context)
        return time_paired({n: (f, x) for n, f in jobs.items()}, "dense", s.paired,
                           before_sample=before, bound_ratio=bound_ratio,
                           reference_floor=dense_floor)


def settle_dense(rec: dict, retime: Callable[[], dict], attempts: int) -> dict:
    """The entry's dense record from its paired timing ``rec`` (time_paired's record of the
    reference). Every time of the entry is compared with it, so an unstable one (its
    samples spread or were whole scheduler slices) is never used as it is: dense is re-timed
    alone (``retime()``, up to ``attempts`` times) and the first stable result stands; when
    none is stable, the fastest dense sample seen stands in (load only ever slows a call,
    so it understates dense and no format looks faster than it is) and the record says so.

    Returns ``{"median_s", "iqr_s", "stable", "why"}`` (seconds), plus ``"retimed"`` (the
    attempts made) when ``rec`` was unstable and ``"estimate": "fastest sample"`` when the
    stand-in is used.
    """
    if rec.get("stable", True):
        return {"median_s": rec["median_s"], "iqr_s": rec["iqr_s"], "stable": True, "why": ""}
    whys = [rec.get("why") or "unstable"]
    fastest = rec.get("min_s", rec["median_s"])
    for i in range(1, attempts + 1):
        r = retime()
        if r.get("stable", True):
            return {"median_s": r["median_s"], "iqr_s": r["iqr_s"], "stable": True,
                    "why": "", "retimed": i}
        whys.append(r.get("why") or "unstable")
        fastest = min(fastest, r.get("min_s", r["median_s"]))
    return {"median_s": fastest, "iqr_s": None, "stable": False, "retimed": attempts,
            "estimate": "fastest sample",
            "why": (f"dense stayed unstable over {attempts + 1} timings ({whys[-1]}); its "
                    f"fastest sample, {fastest * 1e3:.3g} ms, stands in")}


def ratio_agrees(median_s: float, dense_s: float, ratio: float) -> bool:
    """Whether a point's ``ratio`` to dense agrees, within RATIO_SLACK, with its
    ``median_s`` over dense's ``dense_s`` (False for a ratio that is 0, inf or NaN)."""
    off = (median_s / dense_s) / ratio if ratio and math.isfinite(ratio) else math.nan
    return 1.0 / RATIO_SLACK <= off <= RATIO_SLACK


def stored_ratio(rec: dict, dense_s: float, dense_paired_ok: bool) -> Tuple[float, str]:
    """(ratio to store, why it is not the paired one, or "") of a stable point's paired
    record ``rec`` once dense's time is settled at ``dense_s``.

    The paired ratio is kept only when it is a ratio to dense's time: when dense's paired
    samples were judged bad (``dense_paired_ok`` False: settle_dense re-timed dense or let its
    fastest sample stand in) every paired ratio rests on them, and when the ratio disagrees
    with the medians beyond RATIO_SLACK the dense samples of this point's rounds were
    outliers (a stall of dense alone: ratios of 0.003x for points that take 1.3x dense).
    Then the ratio is the point's own median over the settled dense time, which is what a
    choice reads: the point's samples passed their own checks, and were they slowed too the
    point only looks slower (a re-check of the cached entry then measures it again)."""
    paired, own = rec["ratio"], rec["median_s"] / dense_s
    if not dense_paired_ok:
        return own, (f"ratio from the medians: dense's paired samples were judged bad and "
                     f"dense was re-timed (paired ratio {paired:.3g}x)")
    if not ratio_agrees(rec["median_s"], dense_s, paired):
        return own, (f"ratio from the medians: the dense samples it was paired with were "
                     f"outliers (paired ratio {paired:.3g}x, median over dense's {own:.3g}x)")
    return paired, ""


def _time_points(sig: LayerSig, dense: nn.Module, points: List[_Point], s: MeasureSettings,
                 device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> dict:
    x = sig.example_input(gen)
    M, K = sig.matrix_shape
    dense_b, io = module_bytes(dense), io_bytes(sig)
    out: Dict[str, List[dict]] = {}
    timed: Dict[str, Callable] = {"dense": dense}
    where: Dict[str, dict] = {}
    for p in points:
        backend = serving_backend(p.spec.layout, dtype, device, M, K, sig.tokens)
        pt = {"sparsity": p.sparsity, "density": p.density, "status": "ok", "median_s": None,
              "iqr_s": None, "ratio": None, "bytes": module_bytes(p.module), "model_s": None,
              "backend": backend, "reason": ""}
        out.setdefault(p.spec.name, []).append(pt)
        if not layout_registry.get(p.spec.layout).serves_batch(sig.tokens):
            pt.update(status="not-timed", reason=(
                f"{p.spec.name} is a GEMV layout, timed for at most "
                f"{layout_registry.get(p.spec.layout).max_batch} tokens; this layer multiplies "
                f"{sig.tokens} at once: not timed, never chosen"))
            continue
        if backend == "reference" or backend.startswith("error"):
            pt.update(status="no-kernel", reason=(
                f"served by the {backend!r} backend here (no compiled kernel for {p.spec.name} "
                f"{sig.dtype} on {device.type}); not timed, never chosen"))
            continue
        label = f"{p.spec.name}@{p.sparsity:g}"
        timed[label] = p.module
        where[label] = pt
    context = s.context if s.context != "auto" else context_for(dense_b)
    with torch.inference_mode():
        for m in timed.values():
            m(x)  # first call: lazy repacks, allocations
    ratio = {lab: bytes_model_s(1.0, pt["bytes"], dense_b, io) for lab, pt in where.items()}
    floor = dense_floor_s(sig, dense_b, io, torch.get_num_threads())
    res = time_entry_jobs(timed, x, device, s, context, ratio, floor)
    dense_rec = settle_dense(res["dense"], lambda: time_entry_jobs(
        {"dense": dense}, x, device, s, context, None, floor)["dense"], s.paired.retries + 1)
    dense_s = dense_rec["median_s"]
    mem_bound = memory_bound(sig, dense_b, io)
    for label, pt in where.items():
        r = res[label]
        pt["bound_s"] = bytes_model_s(dense_s, pt["bytes"], dense_b, io)
        if r["stable"]:
            # the stored ratio must be one to the dense time stored beside it (a table that
            # fails entry_problem fails to load and is re-measured from the cache)
            ratio, note = stored_ratio(r, dense_s, res["dense"].get("stable", True))
            pt.update(median_s=r["median_s"], iqr_s=r["iqr_s"], ratio=ratio, reason=note)
            continue
        unmeasured = (f"unmeasured: {r['why']} (median {r['median_s'] * 1e3:.3g} ms over "
                      f"{r['attempts']} attempts)")
        if mem_bound:
            pt.update(status="unstable", model_s=pt["bound_s"],
                      reason=f"{unmeasured}; the bytes-bound model predicts it")
        else:
            pt.update(status="unstable", reason=(
                f"{unmeasured}; the layer is compute bound here (over "
                f"{MODEL_MAX_INTENSITY:g} FLOPs per byte), where bytes predict nothing: "
                f"not predicted"))
    return {"signature": sig.to_key(), "context": context,
            "dense": dense_rec,
            "bytes": {"dense": dense_b, "io": io}, "formats": out}


def _choice_ratio(entry: dict, p: dict) -> Optional[float]:
    """What a choice reads of point ``p``: its median time over the entry's dense median
    (LayerLatency.predict / dense_s), None when either is missing or not positive."""
    try:
        med, dense = float(p["median_s"]), float(entry["dense"]["median_s"])
    except (KeyError, TypeError, ValueError):
        return None
    return med / dense if med > 0 and dense > 0 else None


def _recheck_points(entry: dict, count: int) -> List[Tuple[str, dict]]:
    """Up to ``count`` measured points of ``entry`` that matter most for a choice: the
    fastest (lowest median over dense's median) of each format, fastest first."""
    best: Dict[str, Tuple[float, dict]] = {}
    for fmt, pts in entry.get("formats", {}).items():
        for p in pts:
            r = _choice_ratio(entry, p) if p.get("status") == "ok" else None
            if r is not None and float(p.get("density") or 0.0) > 0.0 and (
                    fmt not in best or r < best[fmt][0]):
                best[fmt] = (r, p)
    ranked = sorted(best.items(), key=lambda kv: kv[1][0])
    return [(fmt, p) for fmt, (_, p) in ranked[:count]]


def recheck_entry(sig: LayerSig, entry: dict, settings: Optional[MeasureSettings] = None
                  ) -> dict:
    """Re-time a few points of the cached ``entry`` of ``sig`` and compare.

    The points (:func:`_recheck_points`, ``settings.recheck`` of them) are rebuilt from
    their format and stored fraction and timed paired with dense as in a measurement.
    Returns ``{"agree": bool, "why": str, "points": [{"format", "sparsity", "cached_ratio",
    "ratio", "stable"}]}``: agree when dense's re-timing and every re-timed point are
    stable and each point's median time over dense's median (what a choice reads:
    LayerLatency.predict over dense_s) is within ``settings.recheck_tolerance`` of the
    cached entry's. An entry with no
    measured point has nothing to confirm and is re-measured (agree False).
    """
    s = settings or MeasureSettings()
    chosen = _recheck_points(entry, s.recheck)
    if not chosen:
        return {"agree": False, "points": [],
                "why": "no measured point to re-check (old or fully unstable entry)"}
    dense, x = synthetic_layer(sig, DENSE, 1.0, s.seed)
    jobs: Dict[str, Callable] = {"dense": dense}
    for fmt, p in chosen:
        layer, _ = synthetic_layer(sig, fmt, float(p["density"]), s.seed)
        jobs[f"{fmt}@{p['sparsity']:g}"] = layer
    device = torch.device(sig.device)
    context = entry.get("context") or ("warm" if s.context == "auto" else s.context)
    with torch.inference_mode():
        for m in jobs.values():
            m(x)
    floor = dense_floor_s(sig, module_bytes(dense), io_bytes(sig), torch.get_num_threads())
    res = time_entry_jobs(jobs, x, device, s, context, dense_floor=floor)
    rows, bad = [], []
    dense_now = res["dense"]["median_s"]
    if not res["dense"].get("stable", True):  # every ratio now rests on it: confirms nothing
        bad.append(f"dense unstable now ({res['dense'].get('why') or 'unstable'})")
    for (fmt, p), name in zip(chosen, list(jobs)[1:]):
        r = res[name]
        # the quantity a choice reads: median over dense's median, cached and now (a stored
        # "ratio" left alone while the times were edited must not pass)
        cached, now = _choice_ratio(entry, p), r["median_s"] / dense_now
        rows.append({"format": fmt, "sparsity": p["sparsity"], "cached_ratio": cached,
                     "ratio": now, "stable": bool(r["stable"])})
        off = abs(now / cached - 1.0)
        if not r["stable"]:
            bad.append(f"{name} unstable now ({r['why']})")
        elif off > s.recheck_tolerance:
            bad.append(f"{name} now {now:.3g}x dense, cached {cached:.3g}x "
                       f"({off:.0%} off, tolerance {s.recheck_tolerance:.0%})")
    return {"agree": not bad, "points": rows,
            "why": "; ".join(bad) if bad else
            f"{len(rows)} points within {s.recheck_tolerance:.0%} of their cached ratio to dense"}
