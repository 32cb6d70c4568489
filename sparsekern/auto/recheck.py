"""The latency table's close calls, checked on the whole model (sparsify_auto's last step).

The table times each layer alone, in a cache context meant to stand for the model
(sparsekern.auto.measure), and that stand-in can be wrong on a machine it was not
calibrated on. On the Intel Xeon VM of 2026-12-06 (2 cores, 2 MB L2 per core), the 90%
pruned all-MiniLM-L6-v2 at 12 tokens: the table's "llc" context timed CSC at 1.06-1.17x
of dense on every layer shape, so every layer stayed dense, while inside the model (timed
with hooks) the same CSC layers ran at 0.64-0.86x of dense and the all-CSC model at 0.8x
of the dense one.

So when ``sparsify_auto`` has the model's example inputs, it settles the close calls on
the model itself: the layers kept dense whose best format was predicted at most
:data:`CLOSE_SLOWER` times dense's time are tried packed, all together, against the
table's plan; then the layers packed with a predicted gain smaller than
:data:`CLOSE_FASTER` are tried dense. A trial wins only when the whole model runs at least
``margin`` faster at every example input, in most of :data:`ROUNDS` rounds that alternate
the two plans (the median ratio and the count both decide: the machine drifts). Nothing
is cached; on a busy machine (sparsekern.auto.table.machine_busy) the check is skipped
and says so, since a model timed under load says little.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..inputs import eval_mode
from ..nn import hooks_detached, replace_layer
from .formats import DENSE
from .signature import call

#: A layer kept dense is tried packed when its best format was predicted at most this
#: many times dense's time (the table's misjudgement seen so far: up to 1.6x).
CLOSE_SLOWER = 2.0
#: A packed layer is tried dense when its format was predicted above this fraction of
#: dense's time.
CLOSE_FASTER = 0.8
#: Rounds of a trial (each: one sample of each plan, their order alternating).
ROUNDS = 7
#: A sample runs the model this long at least (several calls of a fast model).
MIN_SAMPLE_S = 0.02
#: At most this many calls per sample.
MAX_CALLS = 50
#: No trial when one call of the model takes longer than this (seconds): a trial runs
#: about 2 * ROUNDS + 2 calls per example input.
MAX_CALL_S = 1.0
#: No pack trial when its packed copies would take more than this fraction of the memory
#: available (they live beside the dense layers while it runs).
MAX_MEMORY_SHARE = 0.25


def paired_ratios(install: Callable[[str], None], run: Callable[[], None],
                  rounds: int = ROUNDS, min_sample_s: float = MIN_SAMPLE_S,
                  clock: Callable[[], float] = time.perf_counter,
                  sync: Callable[[], None] = lambda: None) -> List[float]:
    """Per round, plan "b"'s time over plan "a"'s: ``install(plan)`` (untimed) puts a plan
    in place, a sample times ``run()`` k times, k set by a first call of each so that a
    sample takes about ``min_sample_s`` (at most MAX_CALLS); the plans take turns going
    first (a drift within a round then favours neither). ``sync()`` runs before every
    clock reading (a GPU's queue: torch.cuda.synchronize)."""
    first = {}
    for plan in ("a", "b"):
        install(plan)
        sync()
        t0 = clock()
        run()
        sync()
        first[plan] = clock() - t0
    k = max(1, min(MAX_CALLS, math.ceil(min_sample_s / max(min(first.values()), 1e-9))))
    ratios = []
    for r in range(rounds):
        times = {}
        for plan in (("a", "b") if r % 2 == 0 else ("b", "a")):
            install(plan)
            sync()
            t0 = clock()
            for _ in range(k):
                run()
            sync()
            times[plan] = clock() - t0
        ratios.append(times["b"] / max(times["a"], 1e-12))
    return ratios


def clearly_faster(ratios: Sequence[float], margin: float) -> bool:
    """Whether plan "b" beat plan "a": the median ratio at most 1 - margin and b faster in
    all rounds but at most a quarter of them (rounded down)."""
    if not ratios:
        return False
    s = sorted(ratios)
    median = s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])
    wins = sum(r < 1.0 for r in ratios)
    return median <= 1.0 - margin and wins >= len(ratios) - len(ratios) // 4


def _worst(ratios: Mapping[str, Optional[float]]) -> float:
    vals = [r for r in ratios.values() if r is not None]
    return max(vals) if vals else math.inf


def close_dense(decisions: Mapping[str, "object"], limit: float = CLOSE_SLOWER) -> Dict[str, str]:
    """{layer: format} of the layers kept dense whose best format (smallest worst-shape
    ratio to dense among those the weight fits) was predicted at most ``limit`` x dense."""
    out = {}
    for name, d in decisions.items():
        if d.format != DENSE or not d.others:
            continue
        fits = {f: r for f, r in d.others.items()
                if d.densities.get(f) is not None and d.densities[f] < 1.0}
        if not fits:
            continue
        fmt = min(fits, key=lambda f: _worst(fits[f]))
        if _worst(fits[fmt]) <= limit:
            out[name] = fmt
    return out


def close_packed(decisions: Mapping[str, "object"], limit: float = CLOSE_FASTER) -> List[str]:
    """The packed layers whose format was predicted above ``limit`` x dense at some shape."""
    return [n for n, d in decisions.items()
            if d.format != DENSE and _worst(d.others.get(d.format, {})) > limit]


@dataclass
class Trial:
    """One trial of the whole-model check: the layers it changes and what it found."""

    kind: str                      # "pack" (close calls kept dense) or "unpack"
    layers: Dict[str, str]         # {layer: format the trial gives it ("dense": unpacked)}
    ratios: Dict[str, List[float]] = field(default_factory=dict)  # per example input
    adopted: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "layers": dict(self.layers), "ratios": self.ratios,
                "adopted": self.adopted}


def _parent(model: nn.Module, name: str):
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def _put(model: nn.Module, modules: Mapping[str, nn.Module]) -> None:
    """Plain setattr of each module (no hook take-over: a timing swap, undone after)."""
    for name, m in modules.items():
        parent, child = _parent(model, name)
        setattr(parent, child, m)


def run_trial(model: nn.Module, trial: Trial, plan_a: Mapping[str, nn.Module],
              plan_b: Mapping[str, nn.Module], xs: Sequence, margin: float,
              clock: Callable[[], float] = time.perf_counter,
              quiet: Sequence[nn.Module] = ()) -> Trial:
    """Times ``model`` with ``plan_a`` and with ``plan_b`` in place ({layer: module}) at every
    example input; ``trial.adopted`` when b is clearly faster at all of them. The model is
    left with plan_a's modules in place (the caller adopts b with :func:`adopt`). The hooks
    of both plans' modules and of ``quiet`` (the other candidate layers) do not run."""
    sync = _sync_for(model)
    flags = {n: m.training for n, m in plan_b.items()}
    for m in plan_b.values():
        m.eval()
    try:
        # the user's hooks on the swapped layers neither run nor count for one side only
        with hooks_detached([*plan_a.values(), *plan_b.values(), *quiet]), eval_mode(model), \
                torch.inference_mode():
            for i, x in enumerate(xs):
                trial.ratios[str(i)] = paired_ratios(
                    lambda p: _put(model, plan_a if p == "a" else plan_b),
                    lambda x=x: call(model, x), clock=clock, sync=sync)
    finally:
        _put(model, plan_a)
        for n, m in plan_b.items():
            m.train(flags[n])
    trial.adopted = all(clearly_faster(r, margin) for r in trial.ratios.values())
    return trial


def _sync_for(model: nn.Module) -> Callable[[], None]:
    """torch.cuda.synchronize for a model with CUDA tensors (its calls return before the
    GPU finishes), else nothing."""
    if any(p.is_cuda for p in model.parameters()) or any(b.is_cuda for b in model.buffers()):
        return torch.cuda.synchronize
    return lambda: None


def adopt(model: nn.Module, plan_b: Mapping[str, nn.Module], originals: bool = False) -> None:
    """Puts plan_b's modules in place for good: packed layers take over the hooks and flags
    of the layers they replace (replace_layer); ``originals`` (an unpack trial: the layers
    sparsify replaced) come back as they were, with their own hooks (a weight-recomputing
    pre-hook such as torch.nn.utils.prune's, which the packed layer did not take, included)
    and the packed layer's train flag."""
    for name, m in plan_b.items():
        if originals:
            parent, child = _parent(model, name)
            m.train(getattr(parent, child).training)
            setattr(parent, child, m)
        else:
            replace_layer(model, name, m)


def one_call_s(model: nn.Module, xs: Sequence,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of the slowest example input's call (after one warm-up call each)."""
    worst, sync = 0.0, _sync_for(model)
    with eval_mode(model), torch.inference_mode():
        for x in xs:
            call(model, x)
            sync()
            t0 = clock()
            call(model, x)
            sync()
            worst = max(worst, clock() - t0)
    return worst


def available_bytes(path: str = "/proc/meminfo") -> Optional[int]:
    """MemAvailable of ``path`` in bytes, None where it cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def pack_bytes(mods: Mapping[str, nn.Module], pack: Mapping[str, str], decisions) -> int:
    """Bytes a pack trial adds (an estimate): per layer its stored fraction of the weight's
    elements at 4 bytes of value and 4 of index, three times (the packed copy, and for CSC
    the repack and snapshot its first batched call caches)."""
    total = 0
    for name, fmt in pack.items():
        w = getattr(mods[name], "weight", None)
        if isinstance(w, torch.Tensor):
            total += int(3 * 8 * decisions[name].densities[fmt] * w.numel())
    return total


def flipped(decision, fmt: str, note: str):
    """``decision`` with format ``fmt`` and ``note`` added to its reason."""
    return replace(decision, format=fmt, reason=decision.reason + note)
