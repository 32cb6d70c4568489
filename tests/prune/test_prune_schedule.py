"""Masks hold through training (pruned weights exactly zero), iterative pruning, the trainer."""
import pytest
import torch
from torch import nn

from sparsekern import prune


def _steps(model, opt, n, x, y, after_step=None):
    for _ in range(n):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if after_step:
            after_step()


def _all_pruned_zero(model, masks):
    return all(bool((model.get_submodule(n).weight[~m] == 0).all()) for n, m in masks.items())


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("style", ["context", "attach", "step"])
def test_masks_hold_through_optimizer_steps(make_opt, style, mlp, digits):
    x, y = digits.calib(False, 128), digits.y[digits.train_idx[:128]]
    masks = prune.prune_model(mlp, 0.8)
    opt = make_opt(mlp.parameters())
    holder = prune.MaskHolder(mlp, masks)
    if style == "context":
        with holder:
            _steps(mlp, opt, 20, x, y)
    elif style == "attach":
        holder.attach(opt)
        _steps(mlp, opt, 20, x, y)
        holder.detach()
    else:
        _steps(mlp, opt, 20, x, y, after_step=holder.step)
    assert _all_pruned_zero(mlp, masks)
    assert prune.sparsity(mlp)["total"] == pytest.approx(0.8, abs=1e-4)


def test_without_holder_pruned_weights_regrow(mlp, digits):
    x, y = digits.calib(False, 128), digits.y[digits.train_idx[:128]]
    masks = prune.prune_model(mlp, 0.8)
    _steps(mlp, torch.optim.Adam(mlp.parameters(), lr=1e-2), 3, x, y)
    assert not _all_pruned_zero(mlp, masks)  # so the tests above test something


def test_holder_hooks_are_removed_after_the_context(mlp, digits):
    x, y = digits.calib(False, 64), digits.y[digits.train_idx[:64]]
    masks = prune.prune_model(mlp, 0.5)
    with prune.MaskHolder(mlp, masks):
        pass
    _steps(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), 2, x, y)
    assert not _all_pruned_zero(mlp, masks)


def test_gradients_of_pruned_weights_are_zero_while_attached(mlp, digits):
    x, y = digits.calib(False, 64), digits.y[digits.train_idx[:64]]
    masks = prune.prune_model(mlp, 0.5)
    with prune.MaskHolder(mlp, masks):
        nn.functional.cross_entropy(mlp(x), y).backward()
        for name, m in masks.items():
            assert bool((mlp.get_submodule(name).weight.grad[~m] == 0).all())



def test_a_frozen_pruned_layer_is_held_without_a_gradient_hook(mlp, digits):
    """Partial fine-tuning: a masked layer whose weight is frozen (requires_grad False)
    crashed attach() with 'cannot register a hook on a tensor that doesn't require
    gradient'; fine_tune and distill attach the same holder."""
    x, y = digits.calib(False, 64), digits.y[digits.train_idx[:64]]
    masks = prune.prune_model(mlp, 0.5)
    frozen = next(iter(masks))
    mlp.get_submodule(frozen).requires_grad_(False)
    before = mlp.get_submodule(frozen).weight.detach().clone()
    with prune.MaskHolder(mlp, masks):
        _steps(mlp, torch.optim.SGD([p for p in mlp.parameters() if p.requires_grad], lr=0.1),
               2, x, y)
    assert torch.equal(mlp.get_submodule(frozen).weight, before)
    assert _all_pruned_zero(mlp, masks)

def test_fine_tune_holds_existing_zeros_by_default(cnn, digits):
    masks = prune.prune_model(cnn, 0.7, (1, 8))
    losses = prune.fine_tune(cnn, digits.loader("train", True), epochs=1, progress=False)
    assert len(losses) == 1 and losses[0] > 0
    assert _all_pruned_zero(cnn, masks)


def test_iterative_prune_follows_the_schedule(mlp, digits):
    calls = []

    def train_fn(model):
        calls.append(prune.sparsity(model)["total"])
        prune.fine_tune(model, digits.loader("train", False), epochs=1, masks={},
                        lr=1e-3, progress=False)  # masks={}: only the schedule's holder

    test = digits.loader("test", False, batch_size=512)
    res = prune.iterative_prune(mlp, [0.3, 0.5, 0.7], train_fn=train_fn,
                                eval_fn=lambda m: prune.accuracy(m, test), progress=False)
    assert [h["ratio"] for h in res.history] == [0.3, 0.5, 0.7]
    assert [round(h["sparsity"], 3) for h in res.history] == [0.3, 0.5, 0.7]
    assert calls == pytest.approx([0.3, 0.5, 0.7], abs=1e-3)
    assert all(h["after_finetune"] >= h["after_prune"] - 0.01 for h in res.history)
    assert res.history[-1]["after_finetune"] > 0.93
    assert _all_pruned_zero(mlp, res.masks)


def test_train_loss_goes_down(digits):
    from .models import MLP
    torch.manual_seed(0)
    model = MLP((32, 32))
    losses = prune.train(model, digits.loader("train", False), epochs=3, progress=False)
    assert losses[-1] < losses[0]
    assert prune.DEFAULT_FINETUNE_LR < 1e-3  # fine-tuning uses a lower learning rate
