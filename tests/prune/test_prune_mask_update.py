"""prune.distill(mask_update=MaskUpdate()): SR-STE's moving 2:4 masks, on tiny models."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekern import prune
from sparsekern.prune.distill import _cosine
from sparsekern.prune.mask_update import MovingMasks


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 16, generator=g) for _ in range(n)]


def _groups_ok(w, n=2, m=4):
    """Reference: every group of m consecutive weights of each row has <= n nonzeros."""
    rows = w.detach().reshape(w.shape[0], -1).tolist()
    return all(sum(x != 0 for x in r[i:i + m]) <= n for r in rows for i in range(0, len(r), m))


def test_nm_mask_matches_a_reference_and_ties_keep_the_preferred():
    g = torch.Generator().manual_seed(3)
    for shape in ((8, 16), (5, 4, 2, 2), (3, 24)):
        w = torch.randn(*shape, generator=g)
        keep = prune.nm_mask(w, 2, 4)
        flat, k = w.reshape(shape[0], -1), keep.reshape(shape[0], -1)
        for r in range(flat.shape[0]):
            for i in range(0, flat.shape[1], 4):
                top = sorted(range(4), key=lambda j: -abs(float(flat[r, i + j])))[:2]
                assert sorted(j for j in range(4) if k[r, i + j]) == sorted(top)
        assert keep.shape == w.shape and prune.is_nm(w * keep)
    w = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.3, -0.3, 0.3, 0.1]])
    prefer = torch.tensor([[False, False, True, False, False, True, True, False]])
    assert prune.nm_mask(w, 2, 4, prefer=prefer).tolist() == [
        [True, False, True, False, False, True, True, False]]
    assert prune.nm_mask(w, 2, 4, prefer=~prefer)[0, :4].tolist() == [True, True, False, False]
    assert prune.is_nm(w * 0) and not prune.is_nm(torch.ones(2, 4))
    assert prune.is_nm(torch.tensor([[1., 0, 2, 0, 3, 0, 4, 0]]), 4, 8)
    assert not prune.is_nm(torch.tensor([[1., 0, 2, 0, 3, 0, 4, 5]]), 4, 8)


def test_distill_with_moving_masks_ends_in_an_exact_2_4_pattern():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    first = {n: k.clone() for n, k in masks.items()}
    keys = set(model.state_dict())
    losses = prune.distill(model, teacher, _data(), masks=masks, steps=40, lr=1e-2,
                           progress=False, mask_update=prune.MaskUpdate(decay=0.0, freeze=0.25))
    assert len(losses) == 40 and sum(losses[-4:]) < sum(losses[:4])
    assert set(model.state_dict()) == keys  # no parametrization left behind
    moved = 0
    for n, keep in masks.items():
        w = model.get_submodule(n).weight
        assert type(w) is nn.Parameter and keep.dtype == torch.bool and keep.shape == w.shape
        assert _groups_ok(w) and prune.is_nm(w)
        assert (w[~keep] == 0).all()  # the masks dict holds the final masks
        assert (keep.reshape(w.shape[0], -1, 4).sum(-1) == 2).all()
        moved += int((keep != first[n]).sum())
    assert moved > 0  # the masks did move at this learning rate


def test_masks_move_only_before_the_freeze():
    """Rated after every step (a fake rating that only records the weights' nonzeros and
    rises, so the last weights stay): the pattern changes while moving, never once frozen."""
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    seen = []

    def rating(m):
        seen.append(m[0].weight.detach() != 0)
        return float(len(seen))
    upd = prune.MaskUpdate(decay=0.0, freeze=0.5)
    prune.distill(model, teacher, _data(), masks=masks, steps=20, lr=2e-2, eval_fn=rating,
                  eval_every=1, mask_update=upd, progress=False)
    assert upd.moving_steps(20) == 10 and len(seen) == 21  # step 0 and after each step
    assert any(not torch.equal(seen[s], seen[s + 1]) for s in range(0, 10))
    assert all(torch.equal(seen[s], seen[10]) for s in range(10, 21))
    assert torch.equal(seen[-1], masks["0"])


def test_the_masked_mode_is_unchanged_by_default():
    """Default distill against a plain reference loop (AdamW, warmup + cosine, pruned
    gradients zeroed, clipping, masks re-applied after each step)."""
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    ref = copy.deepcopy(model)
    data = _data()
    losses = prune.distill(model, teacher, data, masks=masks, steps=8, lr=3e-3, warmup=2,
                           progress=False)
    opt = torch.optim.AdamW(list(ref.parameters()), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(8, 2))
    expect = []
    for step in range(8):
        x = data[step % len(data)]
        with torch.no_grad():
            target = teacher(x)
        loss = F.mse_loss(ref(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for n, keep in masks.items():
            ref.get_submodule(n).weight.grad.masked_fill_(~keep, 0.0)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for n, keep in masks.items():
                ref.get_submodule(n).weight.masked_fill_(~keep, 0.0)
        expect.append(float(loss.detach()))
    assert losses == pytest.approx(expect, rel=1e-5, abs=1e-7)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, rtol=1e-5, atol=1e-7)


def test_straight_through_gradient_and_sr_ste_decay():
    """The shadow's gradient is the gradient at the masked weights (straight through), plus
    decay * shadow on the pruned weights; frozen: the masked gradient, no decay."""
    torch.manual_seed(5)
    lin = nn.Linear(8, 3)
    model = nn.Sequential(lin)
    keep = prune.nm_mask(lin.weight, 2, 4)
    shadow = torch.randn(3, 8)
    mm = MovingMasks(model, {"0": keep}, prune.MaskUpdate(decay=0.1)).attach({"0": keep})
    orig = lin.parametrizations.weight.original
    with torch.no_grad():
        orig.copy_(shadow)  # pruned shadows nonzero, as after some steps
    x = torch.randn(5, 8)
    lin(x).pow(2).sum().backward()
    w_eff = (shadow * keep).requires_grad_()
    F.linear(x, w_eff, lin.bias.detach()).pow(2).sum().backward()
    assert torch.allclose(orig.grad, w_eff.grad + 0.1 * shadow * ~keep, atol=1e-5)
    assert torch.equal(lin.weight, shadow * keep)
    orig.grad = None
    mm.freeze()
    lin(x).pow(2).sum().backward()
    assert torch.allclose(orig.grad, w_eff.grad * keep, atol=1e-5)
    mm.finish({"0": keep})
    assert torch.equal(lin.weight.detach(), shadow * keep)


def test_layer_loss_picks_the_intermediate_distance():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    x = _data(1)[0]
    with torch.no_grad():
        h_s, h_t = model[1](model[0](x)), teacher[1](teacher[0](x))
        expect = float((1 - F.cosine_similarity(model(x), teacher(x), dim=-1)).mean()
                       + F.mse_loss(h_s, h_t))
    losses = prune.distill(model, teacher, [x], masks=masks, steps=1, loss="cosine",
                           layers=["1"], layer_loss="mse", progress=False)
    assert losses[0] == pytest.approx(expect, rel=1e-5)


def test_mask_update_settings_are_checked():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    for kw, msg in ((dict(n=0), r"MaskUpdate.n must be a positive int, got 0"),
                    (dict(every=True), r"MaskUpdate.every must be a positive int, got True"),
                    (dict(n=4, m=4), r"MaskUpdate.n must be below m \(keep n of every m\), got "
                                     r"n=4, m=4"),
                    (dict(decay=-1), r"MaskUpdate.decay must be a number >= 0, got -1"),
                    (dict(freeze=1.0), r"MaskUpdate.freeze must be in \[0, 1\), got 1.0")):
        with pytest.raises(ValueError, match=msg):
            prune.MaskUpdate(**kw)
    with pytest.raises(TypeError, match=r"mask_update must be None or a prune.MaskUpdate, got "
                                        r"str"):
        prune.distill(model, teacher, _data(), masks=masks, steps=1, mask_update="srste",
                      progress=False)
    for bad, got in ((None, "None"), ({}, r"\{\}")):
        with pytest.raises(ValueError, match=r"mask_update needs masks: a non-empty dict "
                                             r"\{layer name: bool mask\} of the layers whose "
                                             r"masks move \(updated in place\), got " + got):
            prune.distill(model, teacher, _data(), masks=bad, steps=1,
                          mask_update=prune.MaskUpdate(), progress=False)
    odd = nn.Sequential(nn.Linear(6, 4))
    with pytest.raises(ValueError, match=r"mask_update: layer '0' has weight shape \[4, 6\]; "
                                         r"2:4 masks need its input dim \(flattened\) to be a "
                                         r"multiple of 4"):
        prune.distill(odd, copy.deepcopy(odd), [torch.randn(2, 6)],
                      masks={"0": torch.ones(4, 6, dtype=torch.bool)}, steps=1,
                      mask_update=prune.MaskUpdate(), progress=False)
    fine_model = copy.deepcopy(teacher)
    fine = prune.prune_model(fine_model, 0.5, "fine", "l1")   # unstructured: not 2:4
    w0 = {n: fine_model.get_submodule(n).weight.detach().clone() for n in fine}
    with pytest.raises(ValueError, match=r"mask_update: the mask of layer '\w+' is not 2:4 "
                                         r"\(a group of 4 keeps [34]\); MaskUpdate moves 2:4 "
                                         r"masks only: prune with granularity='2:4' first"):
        prune.distill(fine_model, teacher, _data(), masks=fine, steps=1,
                      mask_update=prune.MaskUpdate(), progress=False)
    for n, w in w0.items():   # rejected before anything changed
        assert torch.equal(fine_model.get_submodule(n).weight, w)
    assert all(not m._forward_hooks for m in fine_model.modules())   # no hook left behind
    with pytest.raises(ValueError, match=r"layer_loss must be None or one of \('mse', "
                                         r"'cosine'\), got 'l1'"):
        prune.distill(model, teacher, _data(), masks=masks, steps=1, layer_loss="l1",
                      progress=False)
