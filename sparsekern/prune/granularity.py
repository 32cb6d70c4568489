"""Granularities: which weights are removed together, and the mask each one computes.

All masks are bool tensors of the weight's shape (True = kept). Scores are float tensors of
the weight's shape, larger = more important; ``-inf`` marks a weight that must stay pruned
(already pruned in an earlier round). Pruning works on the weight matrix [out, K] (see
sparsekern.prune.layers), except kernel granularity which groups the kh x kw kernels of a
Conv2d weight [out, in, kh, kw].

Spellings accepted by :func:`parse`:
    "fine"                      any element
    "2:4", "1:4", "2:8", "N:M"  keep N of every M consecutive weights along K (the input dim)
    (bm, bk), "32x32", "1x8"    blocks of bm rows x bk columns of the [out, K] matrix
    "kernel"                    whole kh x kw kernels of an nn.Conv2d
    "channel"                   whole output channels, removed physically (see channel.py)
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from .. import _layers
from .._warn import user_stacklevel
from .layers import is_linear, weight_matrix

#: How a group's score comes from its elements' scores: mean (L1 criterion, Wanda) or
#: root-mean-square (L2 criterion). Means keep partial edge blocks comparable.
REDUCTIONS = ("mean", "rms")

SPELLINGS = ("'fine', 'N:M' (e.g. '2:4', '1:4', '2:8'), (bm, bk) or 'BMxBK' blocks, 'kernel', "
             "'channel'")


class Granularity:
    """Base: ``mask(module, scores, ratio, name, reduce, per_row)`` returns a bool mask."""

    name = ""
    fixed_ratio: Optional[float] = None  # N:M implies its ratio

    def check(self, name: str, module: nn.Module) -> None:
        """Raise ValueError (naming the layer) when this granularity cannot apply to it."""

    def mask(self, module: nn.Module, scores: torch.Tensor, ratio: float, name: str,
             reduce: str = "mean", per_row: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


def _prune_lowest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Bool mask over a 1-D ``scores``: False at the n_prune lowest (ties by position)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        order = torch.argsort(scores.flatten(), stable=True)
        keep[order[:n_prune]] = False
    return keep


def count_to_prune(n: int, ratio: float) -> int:
    return min(n, int(round(ratio * n)))


def prefix_to_prune(sizes: torch.Tensor, target: float, spare_one: bool = False) -> int:
    """How many groups, taken in order, to remove so that the weights they hold come closest
    to ``target`` weights (ties: fewer). ``sizes``: 1-D, weights per group in removal order
    (edge blocks hold fewer). ``spare_one``: never all of them (a ratio below 1 must not
    zero a whole layer, though all of it may be the closest to the target)."""
    cum = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]).double().cpu()
    k = int(torch.searchsorted(cum, torch.tensor([target], dtype=cum.dtype)))
    k = min(k, cum.numel() - 1)  # target beyond every group: remove them all
    # the last prefix below the target wins a tie; the slack absorbs ratio * n's float error
    if k > 0 and target - float(cum[k - 1]) <= float(cum[k]) - target + 1e-9 * float(cum[-1]):
        k -= 1
    return k - 1 if spare_one and k == sizes.numel() and k > 0 else k


#: Achieved minus requested fraction beyond which whole blocks are reported to miss the ratio.
RATIO_TOLERANCE = 0.05


def warn_if_unreachable(where: str, ratio: float, achieved: float, block) -> None:
    """One UserWarning, at the user's line, when whole blocks removed ``achieved`` of the
    weights of ``where`` (a layer's name and shape), more than RATIO_TOLERANCE from the
    requested ``ratio``."""
    if abs(achieved - ratio) <= RATIO_TOLERANCE:
        return
    warnings.warn(f"{where}: block granularity {block} removes {achieved:.4g} of the weights, "
                  f"not the requested ratio {ratio:g}: removing whole blocks in score order "
                  f"(lowest first; a layer is never removed whole below ratio 1) comes no "
                  f"closer; use smaller blocks or a ratio that whole blocks can reach",
                  stacklevel=user_stacklevel())


@dataclass(frozen=True)
class Fine(Granularity):
    """Any element: the ``ratio`` lowest-scored weights of the layer (or of each row)."""

    name = "fine"

    def mask(self, module, scores, ratio, name, reduce="mean", per_row=False):
        S = _layers.flat2d(scores)
        if per_row:  # comparison group = one output row (Wanda)
            k = count_to_prune(S.shape[1], ratio)
            keep = torch.ones_like(S, dtype=torch.bool)
            if k:
                order = torch.argsort(S, dim=1, stable=True)[:, :k]
                keep.scatter_(1, order, False)
            return keep.reshape(scores.shape)
        return _prune_lowest(S, count_to_prune(S.numel(), ratio)).reshape(scores.shape)


@dataclass(frozen=True)
class NM(Granularity):
    """Keep the n highest-scored of every m consecutive weights along K (the input dim).

    A partial last group (K not a multiple of m) keeps at most n of its weights, so the
    result packs into the 2:4 format (every N:M with N/M <= 1/2 and M a multiple of 4 is a
    2:4 pattern too).
    """

    n: int = 2
    m: int = 4

    @property
    def name(self):
        return f"{self.n}:{self.m}"

    @property
    def fixed_ratio(self):
        return 1.0 - self.n / self.m

    def check(self, name, module):
        K = weight_matrix(module).shape[1]
        if K < self.m:
            what = ("in_features" if is_linear(module)
                    else "in_channels/groups*kh*kw")
            raise ValueError(f"layer {name!r}: granularity '{self.name}' needs at least {self.m} "
                             f"input weights per output (K = {what}), but K={K}; exclude this "
                             f"layer (layers=...) or use 'fine'")

    def mask(self, module, scores, ratio, name, reduce="mean", per_row=False):
        self.check(name, module)
        S = _layers.flat2d(scores).float()
        M, K = S.shape
        Kp = -(-K // self.m) * self.m
        if Kp != K:  # padded slots can never be kept in place of a real weight
            S = torch.nn.functional.pad(S, (0, Kp - K), value=float("-inf"))
        groups = S.reshape(M, Kp // self.m, self.m)
        top = groups.topk(self.n, dim=-1).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
        # A group with fewer than n finite scores may keep a -inf slot: the caller ANDs
        # the previous mask in, so such a weight stays pruned.
        return keep.reshape(M, Kp)[:, :K].reshape(scores.shape)


def _group_scores(groups: torch.Tensor, counts: torch.Tensor, reduce: str,
                  forced: torch.Tensor) -> torch.Tensor:
    """Scores of groups from element scores ``groups`` [..., g] (zero-padded, finite)."""
    if reduce == "rms":
        s = (groups.double() ** 2).sum(-1).div(counts).sqrt()
    else:
        s = groups.double().sum(-1).div(counts)
    return s.masked_fill(forced, float("-inf"))


def _keep_blocks(scores: torch.Tensor, sizes: torch.Tensor, target: float
                 ) -> Tuple[torch.Tensor, float]:
    """(bool keep [n], weights removed) for n blocks of ``scores`` [n] holding ``sizes`` [n]
    weights: the lowest-scored blocks whose weights come closest to ``target``."""
    order = torch.argsort(scores, stable=True)
    k = prefix_to_prune(sizes[order], target, spare_one=target < float(sizes.sum()))
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[order[:k]] = False
    return keep, float(sizes[order[:k]].sum())


@dataclass(frozen=True)
class Block(Granularity):
    """Blocks of bm x bk of the [out, K] weight matrix (vectors when bm or bk is 1).

    ``ratio`` counts weights, not blocks: the lowest-scored blocks are removed until the
    weights they hold come closest to ``ratio * out * K`` (edge blocks hold fewer; ties:
    fewer removed), with a UserWarning when that is more than 0.05 from ``ratio``."""

    bm: int = 32
    bk: int = 32

    @property
    def name(self):
        return f"{self.bm}x{self.bk}"

    @property
    def blocksize(self) -> Tuple[int, int]:
        return self.bm, self.bk

    def mask(self, module, scores, ratio, name, reduce="mean", per_row=False):
        S = _layers.flat2d(scores)
        M, K = S.shape
        Mb, Kb = -(-M // self.bm), -(-K // self.bk)
        forced = torch.isneginf(S)
        pad = (0, Kb * self.bk - K, 0, Mb * self.bm - M)
        vals = torch.nn.functional.pad(S.masked_fill(forced, 0.0), pad)
        real = torch.nn.functional.pad(torch.ones_like(S), pad)
        forced_p = torch.nn.functional.pad(forced, pad)

        def blocks(t):
            return t.reshape(Mb, self.bm, Kb, self.bk).permute(0, 2, 1, 3).reshape(Mb, Kb, -1)

        counts = blocks(real).sum(-1).double()
        gs = _group_scores(blocks(vals), counts, reduce, blocks(forced_p).any(-1))
        keep_b, achieved = _keep_blocks(gs.flatten(), counts.flatten(), ratio * M * K)
        warn_if_unreachable(f"layer {name!r} ({M}x{K})", ratio, achieved / max(1, M * K),
                            self.name)
        keep = keep_b.reshape(Mb, Kb).repeat_interleave(self.bm, 0)
        return keep.repeat_interleave(self.bk, 1)[:M, :K].reshape(scores.shape)


@dataclass(frozen=True)
class Kernel(Granularity):
    """Whole kh x kw kernels of an nn.Conv2d weight [out, in, kh, kw]."""

    name = "kernel"

    def check(self, name, module):
        if not isinstance(module, nn.Conv2d):
            raise ValueError(f"layer {name!r} is a {type(module).__name__}; kernel granularity "
                             f"prunes whole kh x kw kernels of an nn.Conv2d")

    def mask(self, module, scores, ratio, name, reduce="mean", per_row=False):
        self.check(name, module)
        O, I, kh, kw = module.weight.shape  # scores: that shape, or the [out, K] matrix
        S = scores.reshape(O, I, kh * kw)
        forced = torch.isneginf(S)
        counts = torch.full((O, I), float(kh * kw), dtype=torch.float64, device=S.device)
        gs = _group_scores(S.masked_fill(forced, 0.0), counts, reduce, forced.any(-1))
        keep_k = _prune_lowest(gs.flatten(), count_to_prune(O * I, ratio)).reshape(O, I, 1, 1)
        return keep_k.expand(O, I, kh, kw).contiguous().reshape(scores.shape)


@dataclass(frozen=True)
class Channel(Granularity):
    """Whole output channels (rows), removed physically by sparsekern.prune.channel."""

    name = "channel"


_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_BLOCK = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse(spec) -> Granularity:
    """A Granularity from its spelling (see the module docstring); ValueError otherwise."""
    if isinstance(spec, Granularity):
        return spec
    if isinstance(spec, (tuple, list)):
        if len(spec) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in spec):
            bm, bk = spec
            if bm < 1 or bk < 1:
                raise ValueError(f"block granularity needs positive (bm, bk), got {tuple(spec)}")
            return Block(bm, bk)
        raise ValueError(f"unknown granularity {spec!r}; expected {SPELLINGS}")
    if not isinstance(spec, str):
        raise ValueError(f"unknown granularity {spec!r}; expected {SPELLINGS}")
    s = spec.strip().lower()
    if s in ("fine", "element", "unstructured"):
        return Fine()
    if s == "kernel":
        return Kernel()
    if s == "channel":
        return Channel()
    if s == "n:m":
        return NM(2, 4)
    m = _NM.match(s)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not 1 <= n < mm:
            raise ValueError(f"granularity {spec!r}: N:M needs 1 <= N < M, got N={n}, M={mm}")
        return NM(n, mm)
    m = _BLOCK.match(s)
    if m:
        bm, bk = int(m.group(1)), int(m.group(2))
        if bm < 1 or bk < 1:
            raise ValueError(f"block granularity needs positive (bm, bk), got {spec!r}")
        return Block(bm, bk)
    raise ValueError(f"unknown granularity {spec!r}; expected {SPELLINGS}")
