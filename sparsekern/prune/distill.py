"""Recovery by distillation: a pruned model learns to reproduce its dense teacher's outputs.

No labels are needed: the loss is the distance (MSE or cosine) between the student's and the
teacher's final output on the same unlabeled inputs, plus optionally the same distance on
chosen intermediate modules (by name, present in both). The masks are held throughout, so
pruned weights stay exactly 0. The learning rate defaults to :data:`DEFAULT_DISTILL_LR`,
below the usual pre-training rates (1e-4 for BERT-sized encoders), with a linear warmup and
a cosine decay to 0.

Under ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPU) with more than one rank,
the student is wrapped in DistributedDataParallel and gradients are averaged over the ranks,
so every rank holds the same weights after every step; at the end rank 0's buffers (e.g.
BatchNorm running stats) are copied to every rank, so every rank returns the same model. The
data, two ways (``shard_data``):

* ``shard_data=True`` (default): every rank passes the same full ``data`` and takes every
  world-size-th item of it (rank r: items r, r + world, ...). Ranks whose first items (or
  lengths) differ raise ValueError on every rank: their data was split already (or a
  DataLoader shuffled it with a different seed on each rank).
* ``shard_data=False``: each rank passes its own share (e.g. a DataLoader with a
  ``DistributedSampler``) and trains on all of it, as given.

Before training the ranks agree on the number of steps: ``steps``, else one pass over the
smallest share (the extra items of larger shares are dropped, with a warning, as
``DistributedSampler(drop_last=True)`` drops them). A rank with no item raises ValueError on
every rank. ::

    teacher = copy.deepcopy(model)
    masks = prune.prune_model(model, granularity="2:4", criterion="sparsegpt", calib=calib)
    losses = prune.distill(model, teacher, unlabeled_batches, masks=masks, steps=200)

With ``eval_fn`` (e.g. the cosine to the teacher on held-out validation inputs), the student
is rated before the first step, every ``eval_every`` steps and after the last, and the best
rated weights are the ones left in the model: a student already close to its teacher can
be made worse by the optimizer's steps (AdamW moves every weight by about the learning rate
per step, whatever the gradient's size), and then it keeps the weights it started with.
"""
from __future__ import annotations

import itertools
import math
import numbers
import warnings
import zlib
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import _layers, inputs
from .._packed_module import _COLLECTIVE_DTYPES, prepare_ddp
from .layers import default_layers
from .mask_update import MaskUpdate, MovingMasks
from .masks import MaskHolder, StoredZeroHolder, check_masks, masks_from_zeros
from .metric import evaluate
from ..inputs import output_tensor  # noqa: F401  (re-exported: its home was here)

#: Default learning rate of :func:`distill` (AdamW): smaller than pre-training's.
DEFAULT_DISTILL_LR = 5e-5
LOSSES = ("mse", "cosine")


def distance(student: torch.Tensor, teacher: torch.Tensor, kind: str, where: str,
             mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE, or 1 - cosine along the last dim (mean), between two outputs of one shape. With a
    token ``mask`` [batch, seq] (a padded batch's attention_mask) and token-shaped outputs,
    the mean runs over the real tokens only (padding outputs are whatever the pad token id
    makes them); without padding it is the plain mean."""
    if student.shape != teacher.shape:
        raise ValueError(f"{where}: the student's output has shape {list(student.shape)} but the "
                         f"teacher's has {list(teacher.shape)}; distill needs a teacher with the "
                         f"same outputs (the dense model the student was pruned from)")
    s, t = student.float(), teacher.float()
    keep = inputs.real_tokens(s, mask)
    if keep is not None:
        w = keep.to(torch.float32)
        per = ((s - t) ** 2).mean(-1) if kind == "mse" else 1.0 - F.cosine_similarity(s, t, -1)
        return (per * w).sum() / w.sum().clamp_min(1.0)
    if kind == "mse":
        return F.mse_loss(s, t)
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


class _Feed:
    """The items of ``data`` one rank trains on, pass after pass: with ``shard``, every
    world-th item from the rank-th, else every item. The first pass opens early when its
    first items are peeked (to compare the ranks' data before training); they are replayed,
    not lost, so a one-shot iterator still gives each of its items once."""

    def __init__(self, data, rank: int, world: int, shard: bool):
        self.data = [data] if isinstance(data, (torch.Tensor, Mapping, inputs.Args)) else data
        self.rank, self.world = (rank, world) if shard else (0, 1)
        self.length = _length(self.data)
        # the items this rank takes from one pass; None: data has no length
        self.count = (None if self.length is None
                      else len(range(self.rank, self.length, self.world)))
        self.head: list = []
        self.rest: Optional[Iterator] = None

    def peek(self, n: int) -> list:
        """The first ``n`` items of the first pass (all of them when there are fewer)."""
        if self.rest is None:
            self.rest = iter(self.data)
        self.head += itertools.islice(self.rest, max(0, n - len(self.head)))
        return self.head[:n]

    def has_items(self) -> bool:
        """Whether this rank takes at least one item (peeked when data has no length)."""
        if self.count is not None:
            return self.count > 0
        return len(self.peek(self.rank + 1)) > self.rank

    def cycle(self) -> Iterator:
        """This rank's items, pass after pass, each checked (not empty, a mask that fits)."""
        first = iter(self.data) if self.rest is None else itertools.chain(self.head, self.rest)
        total = 0
        for one in itertools.chain([first], (iter(self.data) for _ in itertools.count())):
            n = 0
            for i, item in enumerate(one):
                if i % self.world == self.rank:
                    n += 1
                    inputs.check_not_empty(item, f"data batch {i}")
                    yield item
            total += n
            if n == 0 and total > 0:
                raise ValueError(f"data ran out after {total} batches: a one-shot iterator (a "
                                 f"generator) cannot be read again; give steps <= {total}, "
                                 f"or a list or DataLoader of batches")
            if n == 0:  # only when len(data) promised items it did not give
                raise ValueError("data is empty: give at least one batch of inputs")


def _length(data) -> Optional[int]:
    """len(data); None for an iterable without one (a generator, a DataLoader over an
    IterableDataset)."""
    try:
        return len(data)
    except TypeError:
        return None


def _tensors(item) -> list:
    """Every tensor in ``item`` (nested in tuples, lists, Mappings, Args), in order."""
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, inputs.Args):
        return _tensors(item.args) + _tensors(item.kwargs)
    if isinstance(item, Mapping):
        return [t for v in item.values() for t in _tensors(v)]
    if isinstance(item, (list, tuple)):
        return [t for v in item for t in _tensors(v)]
    return []


def _fingerprint(feed: _Feed) -> List[float]:
    """[len(data) or -1, CRC-32 of the first item's kind, keys and tensor shapes/dtypes, the
    float64 sum of its values, and of its values times their positions]: the same on ranks
    given the same data, different (almost surely) on ranks given different shards."""
    head = feed.peek(1)
    length = -1.0 if feed.length is None else float(feed.length)
    if not head:
        return [length, 0.0, 0.0, 0.0]
    item, raw = head[0], _tensors(head[0])
    keys = list(item.keys()) if isinstance(item, Mapping) else []
    kind = f"{type(item).__name__} {keys} {[(tuple(t.shape), str(t.dtype)) for t in raw]}"
    ts = [t.detach().reshape(-1).double() for t in raw]
    total = sum(float(t.sum()) for t in ts)
    # position-weighted: a permuted batch (same values, other order) differs too
    spread = sum(float((t * torch.arange(1, t.numel() + 1, dtype=t.dtype, device=t.device))
                       .sum()) for t in ts)
    return [length, float(zlib.crc32(kind.encode())), total, spread]


def _agree(feed: _Feed, steps: Optional[int], dist, shard: bool, device) -> int:
    """The number of steps every rank runs: ``steps``, else one pass over the smallest share.
    Under torch.distributed the ranks' shares are compared in one all_gather before any
    training collective, so every rank raises the same ValueError (none is left waiting) and
    no rank with more items hangs in an all-reduce the others never join."""
    if dist is None:
        return _local_steps(feed, steps)
    mine = [-1.0 if feed.count is None else float(feed.count), float(feed.has_items())]
    mine += _fingerprint(feed) if shard else [0.0] * 4
    mine_t = torch.tensor(mine, dtype=torch.float64, device=device)
    everyone = [torch.empty_like(mine_t) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine_t)
    rows = torch.stack(everyone).cpu()
    _check_shares(rows, shard)
    counts = [int(c) for c in rows[:, 0]]
    if steps is not None:
        return steps
    if min(counts) < 0:
        raise ValueError(f"steps is required when data has no length (e.g. a generator; "
                         f"ranks {[r for r, c in enumerate(counts) if c < 0]} have no len)")
    if len(set(counts)) > 1 and dist.get_rank() == 0:
        warnings.warn(f"distill: the ranks take unequal numbers of items of data (per rank: "
                      f"{counts}); every rank runs {min(counts)} steps, one pass over the "
                      f"smallest share, and the {sum(counts) - min(counts) * len(counts)} "
                      f"extra items are dropped (as DistributedSampler(drop_last=True) drops "
                      f"them); pass steps= to cycle through every item", stacklevel=3)
    return min(counts)


def _check_shares(rows: torch.Tensor, shard: bool) -> None:
    """Raise ValueError for ranks given different data under ``shard`` or a rank with no
    item. ``rows``: float64 [world, 6], per rank [items it takes (-1: data has no length),
    1.0 if it has any, its :func:`_fingerprint` (zeros without ``shard``)]; the same on every
    rank, so every rank raises the same error."""
    world = len(rows)
    if shard and not all(torch.allclose(rows[0, 2:], r[2:], rtol=0, atol=0, equal_nan=True)
                         for r in rows):
        differ = [r for r in range(world) if not torch.allclose(
            rows[0, 2:], rows[r, 2:], rtol=0, atol=0, equal_nan=True)]
        raise ValueError(f"data: the ranks passed different data (the first item or length "
                         f"of ranks {differ} differs from rank 0's); with shard_data=True (the "
                         f"default) every rank passes the same full data and takes every "
                         f"world-size-th item of it. Pass shard_data=False when the data is "
                         f"already split per rank (DistributedSampler): each rank then trains "
                         f"on its own data as given")
    empty = [r for r in range(world) if rows[r, 1] == 0]
    if empty:
        shown = [str(int(c)) if c >= 0 else ("1+" if h else "0") for c, h in rows[:, :2]]
        how = (f"with shard_data=True each rank takes every world-size-th item of the same "
               f"data: give at least {world} batches, or shard_data=False for each rank to "
               f"train on all of its own data" if shard else
               "with shard_data=False each rank trains on its own data: give every rank at "
               "least one batch")
        raise ValueError(f"data has no item for rank {', '.join(map(str, empty))} of {world} "
                         f"(items per rank: [{', '.join(shown)}]); {how}")


def _local_steps(feed: _Feed, steps: Optional[int]) -> int:
    """``steps``, else one pass over data, in a single process."""
    if not feed.has_items():
        raise ValueError("data is empty: give at least one batch of inputs")
    if steps is None and feed.count is None:
        raise ValueError("steps is required when data has no length (e.g. a generator)")
    return feed.count if steps is None else steps


def _capture(model: nn.Module, names: Sequence[str], who: str, store: Dict[str, torch.Tensor]):
    modules = dict(model.named_modules())
    handles = []
    for n in names:
        if n not in modules:
            for h in handles:
                h.remove()
            raise ValueError(f"layers: {who} has no module named {n!r}; name modules present "
                             f"in both student and teacher")
        handles.append(modules[n].register_forward_hook(
            lambda mod, args, out, n=n: store.__setitem__(n, output_tensor(out, f"module {n!r}"))))
    return handles


def _world():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


class _Best:
    """The best rated weights of a distillation run (``eval_fn``: higher is better)."""

    def __init__(self, model, eval_fn, every: int, history, dist, world: int):
        self.model, self.eval_fn, self.every = model, eval_fn, every
        self.history = history if history is not None else []
        self.dist, self.world = dist, world
        self.metric, self.step, self.state = -math.inf, -1, None

    def rate(self, step: int, last: bool = False) -> bool:
        """Rate the model after ``step`` steps (0: before the first) when it is due; True
        when it was rated."""
        if self.eval_fn is None or not (step == 0 or last or step % self.every == 0):
            return False
        with inputs.eval_mode(self.model):
            rating = evaluate(self.eval_fn, self.model)
        m = rating if self.dist is None else _mean_over_ranks(torch.tensor(rating), self.dist,
                                                              self.world)
        self.history.append((step, m))
        if m > self.metric:
            self.metric, self.step = m, step
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return True

    def restore(self, last_step: int) -> None:
        """Put the best rated weights back (nothing to do when the last ones were best)."""
        if self.state is not None and self.step != last_step:
            self.model.load_state_dict(self.state)


def _check(model, teacher, loss, steps, lr, data):
    if not isinstance(model, nn.Module) or not isinstance(teacher, nn.Module):
        bad = "model" if not isinstance(model, nn.Module) else "teacher"
        raise TypeError(f"{bad} must be an nn.Module, got "
                        f"{type(model if bad == 'model' else teacher).__name__}")
    if model is teacher:
        raise ValueError("teacher is the student itself; pass a dense copy made before pruning "
                         "(copy.deepcopy(model))")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    _check_number("lr", lr, positive=True)
    if data is None:
        raise ValueError("data is required: unlabeled batches of model inputs")
    # calibration's refusal: (input_ids, attention_mask) read as two batches ran the mask
    # through the model as token ids
    inputs.check_unambiguous(data, "data")


def _check_number(name: str, value, positive: bool, none_means: str = "") -> None:
    """``value``: a finite real number, > 0 (``positive``) or >= 0; None too where
    ``none_means`` says what None means. inf and nan would train to nan weights, a negative
    clipping norm or loss weight would ascend the gradient."""
    if value is None and none_means:
        return
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        none = f"None ({none_means}) or " if none_means else ""
        kind = "a positive number" if positive else "a non-negative number"
        raise ValueError(f"{name} must be {none}{kind}, got {value!r}; expected a finite "
                         f"value {'> 0' if positive else '>= 0'}")


def _check_settings(max_grad_norm, layer_weight, weight_decay, warmup, steps,
                    shard_data) -> None:
    """The optimizer's and the data's settings of :func:`distill` (``steps`` None: the
    warmup's upper bound is checked once the steps are known)."""
    _check_number("max_grad_norm", max_grad_norm, positive=True, none_means="no clipping")
    _check_number("layer_weight", layer_weight, positive=False)
    _check_number("weight_decay", weight_decay, positive=False)
    _check_warmup(warmup, steps)
    if not isinstance(shard_data, bool):
        raise TypeError(f"shard_data must be True (split data across the ranks) or False (each "
                        f"rank's data is its own), got {shard_data!r}")


def _check_warmup(warmup, steps: Optional[int]) -> None:
    """``warmup``: an int number of steps in [0, ``steps``] (``steps`` None: not known yet,
    checked again once the ranks agree on it)."""
    top = "steps" if steps is None else f"steps={steps}"
    if (isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or warmup < 0
            or (steps is not None and warmup > steps)):
        raise ValueError(f"warmup must be an int in [0, {top}] (steps of linear learning-rate "
                         f"warmup before the cosine decay), got {warmup!r}")


def _check_eval(eval_fn, eval_every) -> None:
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be a callable model -> float (higher is better), got "
                        f"{type(eval_fn).__name__}")
    if (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0
            or (eval_fn is not None and eval_every < 1)):
        raise ValueError(f"eval_every must be a positive int (steps between ratings) when "
                         f"eval_fn is given, else 0, got {eval_every!r}")


def distill(model: nn.Module, teacher: nn.Module, data, masks: Optional[Mapping] = None,
            steps: Optional[int] = None, lr: float = DEFAULT_DISTILL_LR, loss: str = "mse",
            layers: Sequence[str] = (), layer_weight: float = 1.0, warmup: int = 0,
            weight_decay: float = 0.0, max_grad_norm: Optional[float] = 1.0,
            train_mode: bool = False, optimizer: Optional[torch.optim.Optimizer] = None,
            progress: bool = True, eval_fn: Optional[Callable[[nn.Module], float]] = None,
            eval_every: int = 0, history: Optional[list] = None,
            mask_update: Optional[MaskUpdate] = None,
            layer_loss: Optional[str] = None, shard_data: bool = True) -> List[float]:
    """Fine-tune the pruned ``model`` to reproduce ``teacher``'s outputs on ``data``.

    Args:
        model: the pruned student (trained in place). Plain module, also under torchrun
            (it is wrapped in DistributedDataParallel here when the world size is > 1), or
            one you wrapped (DistributedDataParallel, torch.compile): masks and ``layers``
            name the layers of the module inside, as prune_model names them.
        teacher: the dense model (not trained; run without gradients in eval mode).
        data: one batch or an iterable of batches (re-iterated until ``steps``); any input
            item of :mod:`sparsekern.inputs` (tensor, tokenizer output dict, ``Args``,
            (inputs, targets) pair: the targets are ignored). Under torch.distributed see
            ``shard_data``.
        masks: {layer: bool mask} held so pruned weights stay exactly 0; None: the zeros now
            in every Linear/Conv2d weight. With None or masks, the zeros packed layers store
            (BSR blocks, 2:4 spare slots) are held too (:class:`StoredZeroHolder`); ``{}``:
            nothing held.
        steps: optimizer steps, cycling through ``data`` (default: one pass over ``data``,
            over the smallest rank's share under torch.distributed; needed when data has no
            length).
        lr: peak learning rate of AdamW, finite > 0; ``warmup`` steps of linear warmup,
            then cosine decay to 0.
        loss: "mse" or "cosine" (1 - cosine similarity along the last dim). For an item
            with a 2-D ``attention_mask`` (a tokenizer's padded batch), token-shaped outputs
            are compared at the real tokens only, as calibration counts them.
        layers: names of intermediate modules (present in both models) whose outputs are
            matched too, each weighted by ``layer_weight``; one name may be a plain str.
        layer_weight: the weight of each of ``layers``' distances (one float, finite >= 0).
        warmup: steps of linear learning-rate warmup, an int in [0, steps].
        weight_decay: AdamW's weight decay (finite >= 0).
        max_grad_norm: gradient clipping, finite > 0 (None: off).
        train_mode: run the student in train mode (dropout on); default eval mode.
        optimizer: your own optimizer over the student's parameters (lr schedule still set).
        eval_fn: ``eval_fn(model) -> float``, higher is better (e.g. the cosine to the
            teacher on validation inputs), called in eval mode: the student is rated before the
            first step, every ``eval_every`` steps and after the last; the best rated
            weights are left in the model (under torch.distributed the ranks' ratings are
            averaged, so every rank keeps the same weights). None: the last weights.
        history: a list that receives (step, rating) for every rating (step 0: before the
            first step).
        mask_update: None (default): the masks are held. A :class:`MaskUpdate`: they move
            (SR-STE: dense shadow weights, straight-through gradient, N:M re-picked by
            magnitude every ``every`` steps, frozen for the last ``freeze`` fraction); the
            final weights honour an exact N:M pattern and ``masks`` (then required, a dict)
            is updated in place to the final masks.
        layer_loss: the distance for ``layers`` ("mse" or "cosine", per token: along the last
            dim); None: ``loss``.
        shard_data: under torch.distributed, True (default): every rank passes the same
            full ``data`` and takes every world-size-th item (ranks passing different data
            raise ValueError); False: each rank's ``data`` is its own share (e.g. from a
            DistributedSampler), used as given. Ignored in a single process.
    Returns:
        the loss of every step (averaged over the ranks under torch.distributed).
    Raises ValueError for a teacher whose outputs do not match the student's, masks that do
    not fit the model, unknown layer names, and bad settings; under torch.distributed also
    (on every rank, before training) for ranks that passed different data with
    ``shard_data=True`` and for a rank with no item. Under torch.distributed every rank ends
    with rank 0's buffers (BatchNorm running stats: each rank's moved on its own batches).
    """
    _check(model, teacher, loss, steps, lr, data)
    _check_settings(max_grad_norm, layer_weight, weight_decay, warmup, steps, shard_data)
    _check_eval(eval_fn, eval_every)
    _check_update(mask_update, masks, layer_loss)
    named, masks, layers, hold_stored = _resolve_masks(model, masks, layers)
    dist, rank, world = _world()
    device = next(model.parameters()).device
    feed = _Feed(data, rank, world, shard_data)
    steps = _agree(feed, steps, dist, shard_data, device)  # before any DDP collective
    _check_warmup(warmup, steps)
    t_device = next(teacher.parameters(), torch.empty(0)).device
    s_store: Dict[str, torch.Tensor] = {}
    t_store: Dict[str, torch.Tensor] = {}
    _check_trainable(model, optimizer)
    # checked before any hook or parametrization touches the model
    mover = MovingMasks(named, masks, mask_update) if mask_update else None
    s_flags, t_flags = inputs.train_flags(model), inputs.train_flags(teacher)
    handles: list = []
    holders: list = []
    moving = bar = None
    losses: List[float] = []
    try:  # every hook, holder and moving mask attached below is removed in `finally`
        handles += _capture(named, layers, "the student", s_store)
        handles += _capture(teacher, layers, "the teacher", t_store)
        moving = mover.attach(masks) if mover is not None else None
        net = _wrap_ddp(model, dist, device)
        opt = optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                             lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(steps, warmup))
        holders = _attach_holders(named, masks if moving is None else None, opt, hold_stored)
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="distill", disable=not progress or rank != 0, leave=False)
        best = _Best(model, eval_fn, eval_every, history, dist, world)
        best.rate(0)
        model.train(train_mode)
        teacher.eval()
        items = feed.cycle()
        for step in range(1, steps + 1):
            # a batch failing on one rank stops every rank (the others would wait in DDP)
            item = _together(lambda: next(items), dist, device, step, "reading its batch")
            total = _together(lambda: _loss(net, teacher, item, (device, t_device),
                                             (s_store, t_store), (loss, layer_loss or loss),
                                             layers, layer_weight),
                              dist, device, step, "in the forward pass")
            opt.zero_grad(set_to_none=True)
            total.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            sched.step()
            if moving is not None:
                moving.step_done(step, steps)
            losses.append(_mean_over_ranks(total.detach(), dist, world))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            best.rate(step, last=step == steps)
        best.restore(steps)
    finally:
        if bar is not None:
            bar.close()
        for h in handles:
            h.remove()
        for h in holders:
            h.apply()
            h.detach()
        if moving is not None:
            moving.finish(masks)
        inputs.restore_flags(s_flags)
        inputs.restore_flags(t_flags)
    _sync_buffers(model, dist)  # reached only when training finished on every rank
    return losses


def _resolve_masks(model: nn.Module, masks, layers):
    """(the module the names refer to, the masks held on it, the ``layers`` names as a list,
    whether packed layers' stored zeros are held); masks=None: the zeros now in the
    weights."""
    hold_stored = masks is None or bool(masks)  # {}: nothing held, stored zeros included
    layers = [layers] if isinstance(layers, str) else list(layers)
    named = _named_root(model, list(masks or ()) + layers)
    if masks is None:
        masks = masks_from_zeros(named) if default_layers(named) else {}
    check_masks(named, masks)
    return named, masks, layers, hold_stored


def _sync_buffers(model: nn.Module, dist) -> None:
    """Rank 0's buffers on every rank (DDP's convention: rank 0's are authoritative). DDP
    broadcasts them only at the start of each forward; in train mode each rank's BatchNorm
    running stats then moved on its own batch. Buffers DDP ignores (packed layers' int16
    indices, kept equal by :func:`prepare_ddp`) are left alone."""
    if dist is None:
        return
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    skip = set(getattr(inner, "_ddp_params_and_buffers_to_ignore", ()))
    for name, buf in inner.named_buffers():
        if name in skip or buf.dtype not in _COLLECTIVE_DTYPES or buf.layout != torch.strided:
            continue
        sent = buf.contiguous()  # collectives need contiguous memory
        dist.broadcast(sent, src=0)
        if sent is not buf:
            buf.copy_(sent)


def _named_root(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """The module whose layer names the masks and ``layers`` use: for a
    DistributedDataParallel or torch.compile wrapper, the model it wraps (prune_model on the
    plain model names its layers "0", the wrappers "module.0", "_orig_mod.0"), unless a name
    already carries the wrapper's prefix."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not any(
            n.startswith("module.") for n in names):
        model = model.module
    inner = _layers.compiled_inner(model)
    if inner is None or any(n.startswith("_orig_mod.") for n in names):
        return model
    return inner


def _check_trainable(model: nn.Module, optimizer) -> None:
    if optimizer is None and not any(p.requires_grad for p in model.parameters()):
        raise ValueError("distill: the student has no parameter with requires_grad=True; "
                         "unfreeze the layers to train (model.requires_grad_(True)) or pass "
                         "optimizer=")


def _wrap_ddp(model: nn.Module, dist, device) -> nn.Module:
    """``model`` in DistributedDataParallel under torch.distributed (else itself)."""
    if dist is None or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    ids = [device.index] if device.type == "cuda" else None
    prepare_ddp(model)  # packed CSC layers' int16 indices: no collective carries int16
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _attach_holders(model: nn.Module, masks, opt, hold_stored: bool) -> list:
    """The holders attached to ``opt`` for the run: ``masks`` (None or empty: none) and, with
    ``hold_stored``, the zeros packed layers store (BSR blocks, 2:4 spare slots)."""
    holders = [MaskHolder(model, masks)] if masks else []
    stored = StoredZeroHolder(model) if hold_stored else None
    if stored is not None and stored.keep:
        holders.append(stored)
    return [h.attach(opt) for h in holders]


def _loss(net, teacher, item, devices, stores, kinds, layers, layer_weight) -> torch.Tensor:
    """One item's distillation loss: the final outputs' distance plus ``layer_weight`` times
    each of ``layers``' (captured by the hooks into ``stores``: student, teacher)."""
    device, t_device = devices
    with torch.no_grad():
        target = output_tensor(inputs.call(teacher, inputs.to_device(item, t_device),
                                           "data item"), "the teacher").to(device)
    out = output_tensor(inputs.call(net, inputs.to_device(item, device), "data item"),
                        "the student")
    mask = inputs.token_mask_of(item, net)  # a padded batch: its real tokens only
    total = distance(out, target, kinds[0], "final output", mask)
    for n in layers:
        total = total + layer_weight * distance(stores[0][n], stores[1][n].to(device), kinds[1],
                                                f"module {n!r}", mask)
    return total


def _check_update(mask_update, masks, layer_loss) -> None:
    if mask_update is not None and not isinstance(mask_update, MaskUpdate):
        raise TypeError(f"mask_update must be None or a prune.MaskUpdate, got "
                        f"{type(mask_update).__name__}")
    if mask_update is not None and not (isinstance(masks, dict) and masks):
        got = repr(masks) if masks is None or isinstance(masks, dict) else type(masks).__name__
        raise ValueError(f"mask_update needs masks: a non-empty dict {{layer name: bool "
                         f"mask}} of the layers whose masks move (updated in place), got {got}")
    if layer_loss is not None and layer_loss not in LOSSES:
        raise ValueError(f"layer_loss must be None or one of {LOSSES}, got {layer_loss!r}")


def _cosine(steps: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor of step t: linear warmup for ``warmup`` steps (checked in
    [0, steps]; warmup == steps still reaches the peak at the last step), then cosine decay."""
    warmup = min(int(warmup), steps - 1)

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))
    return factor


def _together(fn: Callable, dist, device, step: int, where: str):
    """fn(), with every rank stopping when it raises on any rank: under torch.distributed the
    ranks agree (one all_reduce of a flag; the messages gathered only on failure) and the
    failing rank re-raises its error while the others raise a RuntimeError naming it, so no
    rank is left waiting in a collective the failed one never joins."""
    if dist is None:
        return fn()
    try:
        out, err = fn(), None
    except Exception as e:  # noqa: BLE001 - re-raised below on this rank, named on the others
        out, err = None, e
    flag = torch.tensor([0.0 if err is None else 1.0], device=device)
    dist.all_reduce(flag)
    if float(flag) == 0.0:
        return out
    msgs: List[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(msgs, None if err is None else f"{type(err).__name__}: {err}")
    if err is not None:
        raise err
    failed = {r: m for r, m in enumerate(msgs) if m is not None}
    raise RuntimeError(f"distill stopped at step {step}: rank(s) {sorted(failed)} failed "
                       f"{where} ({'; '.join(f'rank {r}: {m}' for r, m in failed.items())}); "
                       f"every rank stops with it")


def _mean_over_ranks(x: torch.Tensor, dist, world: int) -> float:
    if dist is None:
        return float(x)
    x = x.clone().float()
    dist.all_reduce(x)
    return float(x) / world
