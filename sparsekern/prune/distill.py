"""Recovery by distillation: a pruned model learns to reproduce its dense teacher's outputs.

No labels are needed: the loss is the distance (MSE or cosine) between the student's and the
teacher's final output on the same unlabeled inputs, plus optionally the same distance on
chosen intermediate modules (by name, present in both). The masks are held throughout, so
pruned weights stay exactly 0. The learning rate defaults to :data:`DEFAULT_DISTILL_LR`,
below the usual pre-training rates (1e-4 for BERT-sized encoders), with a linear warmup and
a cosine decay to 0.

Under ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPU) with more than one rank,
the student is wrapped in DistributedDataParallel, each rank takes every world-size-th item
of ``data``, and gradients are averaged over the ranks, so every rank holds the same weights
after every step. ::

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

import math
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import _layers, inputs
from .._packed_module import prepare_ddp
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


def _cycle(data, rank: int, world: int) -> Iterator:
    if isinstance(data, (torch.Tensor, Mapping, inputs.Args)):
        data = [data]
    total = 0
    while True:
        n = 0
        for i, item in enumerate(data):
            if i % world == rank:
                n += 1
                # the calibration checks: an empty batch, a mask that does not fit the ids
                inputs.check_not_empty(item, f"data batch {i}")
                yield item
        total += n
        if n == 0 and total > 0:
            raise ValueError(f"data ran out after {total} batches: a one-shot iterator (a "
                             f"generator) cannot be read again; give steps <= {total}, or a "
                             f"list or DataLoader of batches")
        if n == 0:
            raise ValueError(f"data has no item for rank {rank} of {world}: give at least "
                             f"{world} batches" if world > 1 else "data is empty: give at "
                             "least one batch of inputs")


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
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if data is None:
        raise ValueError("data is required: unlabeled batches of model inputs")
    # calibration's refusal: (input_ids, attention_mask) read as two batches ran the mask
    # through the model as token ids
    inputs.check_unambiguous(data, "data")


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
            layer_loss: Optional[str] = None) -> List[float]:
    """Fine-tune the pruned ``model`` to reproduce ``teacher``'s outputs on ``data``.

    Args:
        model: the pruned student (trained in place). Plain module, also under torchrun
            (it is wrapped in DistributedDataParallel here when the world size is > 1).
        teacher: the dense model (not trained; run without gradients in eval mode).
        data: one batch or an iterable of batches (re-iterated until ``steps``); any input
            item of :mod:`sparsekern.inputs` (tensor, tokenizer output dict, ``Args``,
            (inputs, targets) pair: the targets are ignored).
        masks: {layer: bool mask} held so pruned weights stay exactly 0; None: the zeros now
            in every Linear/Conv2d weight. With None or masks, the zeros packed layers store
            (BSR blocks, 2:4 spare slots) are held too (:class:`StoredZeroHolder`); ``{}``:
            nothing held.
        steps: optimizer steps (default: one pass over ``data`` per rank; needed when data
            has no length).
        lr: peak learning rate of AdamW; warmup (steps, linear) then cosine decay to 0.
        loss: "mse" or "cosine" (1 - cosine similarity along the last dim). For an item
            with a 2-D ``attention_mask`` (a tokenizer's padded batch), token-shaped outputs
            are compared at the real tokens only, as calibration counts them.
        layers: names of intermediate modules (present in both models) whose outputs are
            matched too, each weighted by ``layer_weight``; one name may be a plain str.
        max_grad_norm: gradient clipping (None: off).
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
    Returns:
        the loss of every step (averaged over the ranks under torch.distributed).
    Raises ValueError for a teacher whose outputs do not match the student's, masks that do
    not fit the model, unknown layer names, and bad settings.
    """
    _check(model, teacher, loss, steps, lr, data)
    _check_eval(eval_fn, eval_every)
    _check_update(mask_update, masks, layer_loss)
    hold_stored = masks is None or bool(masks)  # {}: nothing held, stored zeros included
    layers = [layers] if isinstance(layers, str) else list(layers)
    named = _named_root(model, list(masks or ()) + layers)
    if masks is None:
        masks = masks_from_zeros(named) if default_layers(named) else {}
    check_masks(named, masks)
    dist, rank, world = _world()
    steps = _default_steps(data, world) if steps is None else steps
    device = next(model.parameters()).device
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
        feed = _cycle(data, rank, world)
        for step in range(1, steps + 1):
            total = _loss(net, teacher, next(feed), (device, t_device), (s_store, t_store),
                          (loss, layer_loss or loss), layers, layer_weight)
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
    return losses


def _named_root(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """The module whose layer names the masks and ``layers`` use: for a torch.compile
    wrapper, the model it wraps (prune_model on the plain model names its layers "0", the
    wrapper "_orig_mod.0"), unless a name already carries the wrapper's prefix."""
    inner = _layers.compiled_inner(model)
    if inner is None or any(n.startswith("_orig_mod.") for n in names):
        return model
    return inner


def _default_steps(data, world: int) -> int:
    """One pass over ``data`` per rank (1 for a single batch); raises for a generator."""
    if isinstance(data, (torch.Tensor, Mapping, inputs.Args)):
        return 1
    if hasattr(data, "__len__"):
        return max(1, math.ceil(len(data) / world))
    raise ValueError("steps is required when data has no length (e.g. a generator)")


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
    warmup = max(0, min(int(warmup), steps - 1))

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))
    return factor


def _mean_over_ranks(x: torch.Tensor, dist, world: int) -> float:
    if dist is None:
        return float(x)
    x = x.clone().float()
    dist.all_reduce(x)
    return float(x) / world
