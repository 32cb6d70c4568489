"""What the demo needs to know about a model and its data: a *task*.

A task gives the search its metric (higher is better), recovers a pruned model (masks are
held by the caller), and measures the final quality with the checks it implies. Two cover
most models, chosen from the data by :func:`task_for`:

* :class:`ClassificationTask`: (inputs, targets) batches; metric = accuracy; recovery =
  fine-tuning with the labels; check: the accuracy drop.
* :class:`DistillTask`: unlabelled input items (tensors, or Mappings such as a tokenizer's
  output, called as ``model(**item)``); the dense model is the teacher. Metric = mean
  cosine between the pruned and the dense model's outputs; recovery = distillation (the
  pruned model learns the dense model's outputs); checks: mean cosine and top-1
  nearest-neighbour agreement of the outputs (for a sentence encoder: its embeddings).
  Each sample's output is one vector (:func:`sample_rows`): a token-shaped output
  [B, T, ...] (a hidden state per token) is mean-pooled over the tokens its batch's
  ``attention_mask`` keeps, as sentence encoders pool, so batches padded to different
  lengths compare and padding never counts; any other output is flattened per sample.

One-shot iterators (generators) are read into a list once (:func:`replayable`): every
data argument is read more than once (the dense baseline, each search step, the checks).
"""
from __future__ import annotations

import itertools
import warnings
from typing import Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from .. import _layers, inputs, prune
from .._warn import user_stacklevel
from ..prune.calibration import replayable
from ..prune.trainer import default_loss as classification_loss  # prune.train's own loss


class Steps:
    """A loader that yields exactly ``steps`` batches of ``loader`` (cycling); has a len."""

    def __init__(self, loader, steps: int):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.loader, self.steps = loader, int(steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)),
                                self.steps)


def call(model: nn.Module, item):
    """``model`` on one data item (sparsekern.inputs): ``model(x)``, ``model(**mapping)``,
    ``model(inputs)`` for an (inputs, targets) pair."""
    return inputs.call(model, item, "data item")


def _is_labelled(item) -> bool:
    return (isinstance(item, (tuple, list)) and len(item) == 2 and
            isinstance(item[1], torch.Tensor) and not item[1].is_floating_point())


def _first(data: Iterable, what: str):
    for item in data:
        return item
    raise ValueError(f"{what} is empty: give at least one batch")


def _sequence_shape(item) -> Optional[tuple]:
    """(B, T) of the item's token sequence: its 2-D ``attention_mask`` or ``input_ids``, or
    a 2-D integer tensor passed as the first input (token ids); None when it has none."""
    try:
        args, kwargs = inputs.split(item)
    except TypeError:
        return None
    for v in (kwargs.get("attention_mask"), kwargs.get("input_ids"), args[0] if args else None):
        if isinstance(v, torch.Tensor) and v.dim() == 2 and not v.is_floating_point() \
                and not v.is_complex():
            return tuple(v.shape)
    return None


def sample_rows(out: torch.Tensor, item, model: Optional[nn.Module] = None) -> torch.Tensor:
    """One float32 row per sample of ``out``, the model's output on ``item``: [B, features].

    A token-shaped output [B, T, ...] (B, T: the item's sequence, :func:`_sequence_shape`)
    is mean-pooled over the tokens: those its ``attention_mask`` [B, T] keeps (nonzero),
    every token without one, as a sentence encoder's mean pooling does. Any other output
    ([B, d] embeddings or logits, [B, C, H, W] maps) is flattened per sample."""
    o = out.float()
    seq = _sequence_shape(item)
    if o.dim() < 3 or seq is None or tuple(o.shape[:2]) != seq:
        return _layers.flat2d(o)
    mask = inputs.token_mask_of(item, model)
    keep = torch.ones(seq) if mask is None or tuple(mask.shape) != seq else (mask != 0)
    w = keep.to(device=o.device, dtype=o.dtype).reshape(*seq, *([1] * (o.dim() - 2)))
    summed = torch.where(w > 0, o, torch.zeros((), dtype=o.dtype, device=o.device)).sum(1)
    return _layers.flat2d(summed / w.sum(1).clamp_min(1.0))


def _join(rows: List[torch.Tensor], data: list, what: str) -> torch.Tensor:
    """The rows of every batch as one [n, features]; ValueError naming the first batch whose
    outputs have another size per sample than batch 0's."""
    if not rows:
        raise ValueError(f"{what} is empty: give at least one batch of inputs")
    for i, r in enumerate(rows):
        if r.shape[1] != rows[0].shape[1]:
            raise ValueError(
                f"{what}: the model's output has {rows[0].shape[1]} values per sample on batch "
                f"0 ({inputs.describe(data[0])}) but {r.shape[1]} on batch {i} "
                f"({inputs.describe(data[i])}); expected one size to compare them: give "
                f"batches of one shape, or a model that returns one vector per sample (a "
                f"token-shaped output [B, T, ...] is pooled only when the batch holds its "
                f"token ids or attention_mask [B, T])")
    return torch.cat(rows)


@torch.no_grad()
def outputs(model: nn.Module, data: Iterable, what: str = "data") -> torch.Tensor:
    """The model's outputs on every item, one row per sample (:func:`sample_rows`): float32
    [n, features]. ``what`` names ``data`` in errors."""
    data = list(data)
    with inputs.eval_mode(model):  # every module's own train/eval flag comes back
        # A Hugging Face model returns a ModelOutput: its first tensor (last_hidden_state,
        # logits) stands for it, as in prune.distill.
        rows = [sample_rows(inputs.output_tensor(_call_on(model, b, f"{what} batch {i}"),
                                                 "the model"), b, model)
                for i, b in enumerate(data)]
    return _join(rows, data, what)


#: Errors of a model on data it does not fit (a feature size, token ids out of the vocabulary,
#: a dtype), re-raised with the batch named (the same type, so callers catch what they did).
_DATA_ERRORS = (RuntimeError, IndexError, TypeError, ValueError)


def _call_on(model: nn.Module, item, where: str):
    """call(model, item); a plain data error raised by the model names ``where``."""
    try:
        return call(model, item)
    except _DATA_ERRORS as e:
        if type(e) not in _DATA_ERRORS:  # a subclass may not take one message: as it is
            raise
        raise type(e)(f"{where}: the model failed on it: {e}") from e


def output_quality(ref: torch.Tensor, out: torch.Tensor) -> Dict[str, float]:
    """{"mean_cosine", "top1_agreement"} of ``out`` against ``ref`` (both [n >= 2, d]):
    per-sample cosine, and whether each sample's nearest other sample is the same."""
    if ref.shape != out.shape or ref.dim() != 2 or ref.shape[0] < 2:
        raise ValueError(f"ref and out must be [n >= 2, d] of one shape, got {tuple(ref.shape)} "
                         f"and {tuple(out.shape)}")
    r = nn.functional.normalize(ref.float(), dim=-1)
    o = nn.functional.normalize(out.float(), dim=-1)

    def nearest(e):
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.argmax(1)

    return {"mean_cosine": float((r * o).sum(-1).mean()),
            "top1_agreement": float((nearest(r) == nearest(o)).float().mean())}


class ClassificationTask:
    """Labelled (inputs, targets) batches: accuracy, fine-tuning with cross-entropy."""

    kind = "classification"
    metric_name = "accuracy"

    def __init__(self, train, val, test=None):
        self.train, self.val = replayable(train), replayable(val)
        self.test = self.val if test is None else replayable(test)
        for what, data in (("train", self.train), ("val", self.val), ("test", self.test)):
            _first(data, what)  # named here, not "the loader yielded no samples" later

    def bind(self, dense: nn.Module) -> None:
        self.dense = dense

    def metric(self, model: nn.Module) -> float:
        return float(prune.accuracy(model, self.val))

    def recover(self, model: nn.Module, steps: int, lr: float) -> List[float]:
        """``steps`` steps of sparsekern.prune.train (Adam, cross entropy on the labels)
        over the training batches, cycled (the caller holds the masks); returns the loss
        of every step."""
        if steps < 1:
            return []
        curve: List[float] = []

        def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = classification_loss(out, y)
            curve.append(float(loss.detach()))
            return loss
        prune.train(model, Steps(self.train, steps), epochs=1, lr=lr, loss_fn=loss_fn,
                    progress=False)
        return curve

    def epoch_steps(self) -> int:
        return len(self.train)

    def quality(self, model: nn.Module) -> Dict[str, float]:
        return {"accuracy": float(prune.accuracy(model, self.test))}

    def checks(self, dense_q: Mapping[str, float], q: Mapping[str, float], cfg) -> Dict[str, dict]:
        drop = dense_q["accuracy"] - q["accuracy"]
        return {"accuracy": {"max_drop": cfg.max_accuracy_drop, "drop": drop,
                             "ok": drop <= cfg.max_accuracy_drop + 1e-12,
                             "text": f"accuracy drop {100 * drop:.2f} points <= "
                                     f"{100 * cfg.max_accuracy_drop:g}"}}

    def describe(self, dense_q, q) -> str:
        return (f"accuracy (test): dense {dense_q['accuracy']:.2%}, pruned {q['accuracy']:.2%} "
                f"(drop {100 * (dense_q['accuracy'] - q['accuracy']):+.2f} points)")


#: Distillation's learning rate is scaled by the student's distance to its teacher (1 - the
#: validation cosine): the full rate at a distance of FULL_LR_GAP or more, proportionally
#: less below it, never under MIN_LR_FACTOR of it. Measured on all-MiniLM-L6-v2 (SparseGPT,
#: 64 steps of 16 sentences, held-out cosine before -> after): one layer at 90% (distance
#: 0.022) lost at 2e-4 (0.977 -> 0.970) and gained at 5e-5 (-> 0.985) and 2e-5 (-> 0.984);
#: every layer at 50% (distance 0.10), 70% (0.29) or 2:4 (0.18) gained most at 2e-4
#: (0.899 -> 0.931, 0.714 -> 0.802, 0.831 -> 0.885; at 5e-5: 0.922, 0.767, 0.866).
#: AdamW moves every weight by about the rate per step whatever its gradient, so a student
#: near its teacher is pushed away by noise at a rate that suits a distant one.
FULL_LR_GAP = 0.1
MIN_LR_FACTOR = 0.1
#: Ratings of the student on the validation set during a recovery (the best is kept).
RECOVERY_RATINGS = 4


def scaled_lr(lr: float, gap: float) -> float:
    """``lr`` x clamp(gap / FULL_LR_GAP, MIN_LR_FACTOR, 1): the learning rate for a student
    whose validation cosine to its teacher is 1 - ``gap``."""
    return float(lr) * min(1.0, max(MIN_LR_FACTOR, float(gap) / FULL_LR_GAP))


class DistillTask:
    """Unlabelled items; the dense model is the teacher (see the module docstring).

    ``train``: the distillation items (a list: the teacher's outputs are computed once
    per item); ``val``: the search's metric; ``test``: held-out final quality.
    ``runs``: one dict per :meth:`recover` call (lr asked / used, distance to the teacher,
    the validation ratings and the step whose weights were kept).
    """

    kind = "distillation"
    metric_name = "mean cosine to dense"
    #: the distillation loss (sparsekern.prune.distill): "mse" or "cosine"
    loss = "mse"
    #: scale the learning rate by the distance to the teacher (scaled_lr)
    scale_lr = True

    def __init__(self, train, val, test=None):
        self.train, self.val = list(train), list(val)
        self.test = self.val if test is None else list(test)
        for what, items in (("train", self.train), ("val", self.val), ("test", self.test)):
            if not items:
                raise ValueError(f"{what} is empty: give at least one batch of inputs")
            if what != "train":
                _check_samples(items, what)
        self.curves: List[List[float]] = []
        self.runs: List[dict] = []

    def bind(self, dense: nn.Module) -> None:
        self.dense = dense
        self.val_ref = outputs(dense, self.val, "val")
        self.test_ref = outputs(dense, self.test, "test")

    def metric(self, model: nn.Module) -> float:
        return output_quality(self.val_ref, outputs(model, self.val, "val"))["mean_cosine"]

    def epoch_steps(self) -> int:
        return len(self.train)

    def recover(self, model: nn.Module, steps: int, lr: float) -> List[float]:
        """``steps`` steps of sparsekern.prune.distill on the distillation items (``self.loss``
        to the dense model's outputs, AdamW, warm-up then cosine decay; the zeros of every
        weight are held); returns the loss per step.

        The learning rate is :func:`scaled_lr` of ``lr`` and the validation distance before
        (when ``scale_lr``); the student is rated on the validation set
        ``RECOVERY_RATINGS`` times (and before the first step), and the best rated weights
        are kept (the starting ones when no step helped)."""
        if steps < 1:
            return []
        before = self.metric(model)
        used = scaled_lr(lr, 1.0 - before) if self.scale_lr else float(lr)
        ratings: List[tuple] = []
        curve = prune.distill(model, self.dense, self.train, steps=steps, lr=used,
                              loss=self.loss, warmup=steps // 10, progress=False,
                              eval_fn=self.metric,
                              eval_every=max(1, -(-steps // RECOVERY_RATINGS)), history=ratings)
        best = max(ratings, key=lambda r: r[1])
        self.runs.append({"lr": float(lr), "lr_used": used, "metric_before": before,
                          "ratings": ratings, "kept_step": best[0], "kept_metric": best[1]})
        self.curves.append(curve)
        return curve

    def quality(self, model: nn.Module) -> Dict[str, float]:
        return output_quality(self.test_ref, outputs(model, self.test, "test"))

    def checks(self, dense_q, q, cfg) -> Dict[str, dict]:
        return {"cosine": {"min": cfg.min_cosine, "measured": q["mean_cosine"],
                           "ok": q["mean_cosine"] >= cfg.min_cosine,
                           "text": f"mean cosine to dense {q['mean_cosine']:.4f} >= "
                                   f"{cfg.min_cosine:g}"},
                "top1": {"min": cfg.min_top1, "measured": q["top1_agreement"],
                         "ok": q["top1_agreement"] >= cfg.min_top1,
                         "text": f"top-1 neighbour agreement {q['top1_agreement']:.2%} >= "
                                 f"{cfg.min_top1:.0%}"}}

    def describe(self, dense_q, q) -> str:
        return (f"quality (held-out, {len(self.test_ref)} samples, against the dense model): "
                f"mean cosine {q['mean_cosine']:.4f}, top-1 neighbour agreement "
                f"{q['top1_agreement']:.2%}")


def _check_samples(items: list, what: str) -> None:
    """``items`` hold at least 2 samples (rows), each batch a valid input item; ValueError
    naming ``what`` (the top-1 check compares each sample's nearest other sample)."""
    n = 0
    for i, item in enumerate(items):
        inputs.check_not_empty(item, f"{what} batch {i}")
        n += inputs.batch_size(item)
    if n < 2:
        raise ValueError(f"{what} holds {n} sample in {len(items)} batch(es); expected at "
                         f"least 2 samples (the top-1 neighbour agreement compares each "
                         f"sample's nearest other sample)")


def task_for(train, val, test=None):
    """ClassificationTask when the batches are (inputs, integer targets) pairs, else
    DistillTask. A one-shot iterator (a generator) is read into a list first (:func:`replayable`),
    so the item looked at to decide is not lost."""
    train, val = replayable(train), replayable(val)
    test = None if test is None else replayable(test)
    first = _first(train, "train")
    if _is_labelled(first):
        return ClassificationTask(train, val, test)
    if isinstance(first, (tuple, list)) and len(first) == 2 and \
            isinstance(first[1], torch.Tensor) and first[1].is_floating_point():
        warnings.warn(f"train's items are (inputs, {first[1].dtype} tensor) pairs: the demo's "
                      f"tasks are classification (integer class labels) and distillation "
                      f"from the dense model, so these float targets are ignored and the "
                      f"outputs are distilled; give integer labels for classification, or "
                      f"pass task=... for another objective", stacklevel=user_stacklevel())
    return DistillTask(train, val, test)
