"""End-to-end model latency: dense vs pruned + sparsified, and where the time goes.

For each model (sparsekern.bench.models) and variant (2:4, 90% block, 90% unstructured):
a copy of the dense model is pruned by magnitude (sparsekern.bench.magnitude), swapped to
sparse layers with ``sparsekern.sparsify``, checked against the pruned dense model, and
timed against the dense model in the same interleaved measurement. A second interleaved
pass with forward hooks on every Linear/SparseLinear measures the share of each forward
spent inside them: ``linear_speedup`` is the speedup of the Linear layers alone (time inside
them, dense over sparse), and ``amdahl_limit`` = 1 / (share outside the Linear layers of the
dense model) is Amdahl's ideal at that share, the report's "ideal at hook-measured Linear
share (est.)". An estimate, not a bound (the field keeps its old name for the committed
results): measured speedups exceed it (bench/results/cpu-full: bert-base bsr 90% at batch 1
12.1x against 11.1x), since the time outside the Linear layers is no constant: in the
sparse model it was 0.3-0.95x the dense model's in all 18 rows of that run (fewer weight
bytes through the caches, likely); the hooks also add time outside the layers (the share
reads low), and the share comes from another pass than the latencies. A bound would need
the model timed with instant Linear stubs, interleaved with the dense and sparse models.
"""
from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import magnitude, metrics, models
from .candidates import serving_backend
from .runner import RunSettings, dtype_name, rel_error, tolerance
from .timing import time_cuda, time_interleaved


@dataclass(frozen=True)
class ModelVariant:
    """How every Linear of a model is pruned and packed."""

    name: str
    layout: str
    sparsity: float
    blocksize: Optional[Tuple[int, int]] = None


VARIANTS = (ModelVariant("2:4", "2:4", 0.5),
            ModelVariant("bsr32x32-s90", "bsr", 0.9, (32, 32)),
            ModelVariant("csc-s90", "csc", 0.9))
BATCHES = (1, 32)
QUICK_MODELS = ("minilm-l6",)
FULL_MODELS = ("minilm-l6", "bert-base", "llama7b-mlp")


def _linear_modules(model: nn.Module):
    from sparsekern.nn import SparseLinear
    return [m for m in model.modules() if isinstance(m, (nn.Linear, SparseLinear))]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class _LinearClock:
    """Forward hooks that add up the wall time spent inside a model's Linear layers."""

    def __init__(self, model: nn.Module, device: str):
        self.inside = 0.0
        self._starts: Dict[int, float] = {}
        self._device = device
        self._handles = []
        for m in _linear_modules(model):
            self._handles += [m.register_forward_pre_hook(self._pre),
                              m.register_forward_hook(self._post)]

    def _pre(self, mod, args):
        _sync(self._device)
        self._starts[id(mod)] = time.perf_counter()

    def _post(self, mod, args, out):
        _sync(self._device)
        self.inside += time.perf_counter() - self._starts.pop(id(mod))

    def remove(self):
        for h in self._handles:
            h.remove()


@torch.inference_mode()
def linear_shares(model_list: Sequence[nn.Module], x: torch.Tensor, device: str = "cpu",
                  seconds: float = 0.1, min_runs: int = 3) -> List[float]:
    """Share of each model's forward wall time spent inside its Linear/SparseLinear layers.

    The models run in alternation (A B A B ...), each forward timed whole and with hooks
    around its Linear layers, so load from other processes hits them alike; the result is
    the median per-forward share. Hooks cost a little time outside the layers, so shares
    read low; latencies are measured separately, without hooks (see the module docstring
    for why 1 / (1 - share) is no bound on the model's speedup).
    """
    clocks = [_LinearClock(m, device) for m in model_list]
    shares: List[List[float]] = [[] for _ in model_list]
    try:
        t0 = time.perf_counter()
        for m in model_list:
            m(x)  # warm
        if time.perf_counter() - t0 > seconds:  # slow forwards: the minimum is one run
            min_runs = 1
        spent, runs = 0.0, 0
        while runs < min_runs or spent < seconds:
            for i, (m, clock) in enumerate(zip(model_list, clocks)):
                clock.inside = 0.0
                _sync(device)
                t = time.perf_counter()
                m(x)
                _sync(device)
                total = time.perf_counter() - t
                spent += total
                shares[i].append(min(1.0, clock.inside / total) if total > 0 else 0.0)
            runs += 1
    finally:
        for clock in clocks:
            clock.remove()
    return [statistics.median(s) for s in shares]


def linear_share(model: nn.Module, x: torch.Tensor, device: str = "cpu",
                 seconds: float = 0.05, min_runs: int = 3) -> float:
    """Share of one model's forward spent inside its Linear/SparseLinear layers."""
    return linear_shares([model], x, device, seconds, min_runs)[0]


def reference_work(model: nn.Module, tokens: int, device: str, dtype) -> int:
    """stored values x tokens over the sparse layers that the reference backend would serve."""
    from sparsekern.nn import SparseLinear
    work = 0
    for m in model.modules():
        if isinstance(m, SparseLinear):
            b = serving_backend(m.layout, dtype, torch.device(device), m.out_features,
                                m.in_features, tokens)
            if b == "reference":
                work += m.values.numel() * tokens
    return work


def layer_backends(model: nn.Module, tokens: int, device: str, dtype) -> Dict[str, int]:
    """{"dense": n, "<layout> on <backend>": n} over the model's Linear layers."""
    from sparsekern.nn import SparseLinear
    count: Counter = Counter()
    for m in _linear_modules(model):
        if isinstance(m, SparseLinear):
            b = serving_backend(m.layout, dtype, torch.device(device), m.out_features,
                                m.in_features, tokens)
            count[f"{m.layout} on {b}"] += 1
        else:
            count["dense"] += 1
    return dict(count)


def make_sparse(dense: nn.Module, v: ModelVariant) -> Tuple[nn.Module, nn.Module]:
    """(pruned dense copy, its sparsified copy) of ``dense`` for variant ``v``."""
    from ..nn import sparsify

    pruned = copy.deepcopy(dense)
    magnitude.prune_model(pruned, v.layout, v.sparsity, v.blocksize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparse = sparsify(copy.deepcopy(pruned), layout=v.layout, blocksize=v.blocksize)
    return pruned, sparse


def _time_pair(dense, sparse, x, s: RunSettings) -> Tuple[dict, dict]:
    with torch.inference_mode():
        if s.device == "cuda":
            return time_cuda(dense, [x], s.cuda_timer), time_cuda(sparse, [x], s.cuda_timer)
        t = time_interleaved({"dense": (dense, x), "sparse": (sparse, x)}, s.timer)
    return t["dense"], t["sparse"]


def _measure(dense: nn.Module, sparse: nn.Module, x: torch.Tensor, want: torch.Tensor,
             s: RunSettings) -> dict:
    """Check, then time dense vs sparse on x; the measured fields of a model record."""
    out = {"status": "ok", "reason": "", "rel_error": None, "dense": None, "sparse": None,
           "speedup": None, "dense_linear_share": None, "sparse_linear_share": None,
           "sparse_outside_share": None, "linear_speedup": None, "amdahl_limit": None}
    tokens = x.shape[0] * x.shape[1]
    work = reference_work(sparse, tokens, s.device, s.dtype)
    if work > s.max_reference_work_model:
        share = linear_share(dense, x, s.device)
        out.update(status="skipped", dense_linear_share=share,
                   amdahl_limit=_finite(metrics.amdahl_limit(share)),
                   reason="sparse layers served by the reference backend (no kernel yet) and "
                          "stored*tokens > max_reference_work_model: not timed")
        return out
    with torch.inference_mode():
        err = rel_error(sparse(x).float(), want.float())
    out["rel_error"] = err
    if not err <= max(1e-3, tolerance(s.dtype, s.device)):
        out.update(status="wrong", reason=f"relative error {err:.3g} vs the pruned dense model")
        return out
    td, ts = _time_pair(dense, sparse, x, s)
    d_share, s_share = linear_shares([dense, sparse], x, s.device)
    out.update(dense=td, sparse=ts, speedup=metrics.speedup(td["median_s"], ts["median_s"]),
               dense_linear_share=d_share, amdahl_limit=_finite(metrics.amdahl_limit(d_share)),
               sparse_linear_share=s_share, sparse_outside_share=1.0 - s_share,
               linear_speedup=metrics.speedup(d_share * td["median_s"], s_share * ts["median_s"]))
    return out


def run_model(name: str, s: RunSettings, batches: Iterable[int] = BATCHES,
              variants: Iterable[ModelVariant] = VARIANTS,
              on_variant: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Records for every (variant, batch) of model ``name`` (JSON-ready dicts).

    ``on_variant(label)`` is called after each variant (progress reporting).
    """
    batches = list(batches)
    dense = models.build(name, s.seed, s.dtype, s.device)
    hidden = models.hidden_size(name)
    gen = torch.Generator().manual_seed(s.seed)
    xs = {b: torch.randn(1, b, hidden, generator=gen).to(s.device, s.dtype) for b in batches}
    out = []
    for v in variants:
        pruned, sparse = make_sparse(dense, v)
        with torch.inference_mode():
            want = {b: pruned(xs[b]) for b in batches}
        del pruned
        packed = sum(1 for lay, _ in sparse.sparsekern_report.values() if lay != "dense")
        for b in batches:
            rec = {"model": name, "variant": v.name, "layout": v.layout, "sparsity": v.sparsity,
                   "blocksize": list(v.blocksize) if v.blocksize else None, "batch": b,
                   "device": s.device, "dtype": dtype_name(s.dtype),
                   "layers_packed": packed, "layers_total": len(sparse.sparsekern_report),
                   "layers": layer_backends(sparse, b, s.device, s.dtype)}
            rec.update(_measure(dense, sparse, xs[b], want[b], s))
            out.append(rec)
        del sparse
        if on_variant:
            on_variant(f"{name} {v.name}")
    return out


def _finite(x: float) -> Optional[float]:
    return None if x == float("inf") else x


def run_models(names: Iterable[str], s: RunSettings, batches: Iterable[int] = BATCHES,
               variants: Iterable[ModelVariant] = VARIANTS, progress: bool = True) -> List[dict]:
    names, variants = list(names), list(variants)
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(names) * len(variants), unit="variant", desc="models",
                       dynamic_ncols=True)
        except ImportError:
            bar = None
    out = []

    def done(label):
        if bar is not None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

    try:
        for name in names:
            out += run_model(name, s, batches, variants, on_variant=done)
    finally:
        if bar is not None:
            bar.close()
    return out
