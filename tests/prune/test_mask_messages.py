"""Masks given for packed layers: the error is true for the layer's layout.

A layout that stores only the nonzeros (csc, sell) keeps pruned weights at zero by not
storing them. BSR (zeros inside a kept block) and N:M (2:4, 1:4: the spare slots of sparse
groups) store zeros, which train like every stored value: only prune.StoredZeroHolder (what
fine_tune and distill attach) keeps them at zero. The error said "they stay zero without a
mask" for every layout, which was false for bsr, 2:4 and 1:4.
"""
import copy
import re

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune

OLD = "stay zero without a mask"


def _packed(layout, conv=False, seed=0):
    """(model with layer "0" packed as ``layout``, masks of the dense pruning): for bsr and
    N:M, some kept entries are zeroed before packing, so the layer stores zeros."""
    torch.manual_seed(seed)
    if conv:
        model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(16 * 36, 4))
    else:
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    kw = {}
    if layout in ("2:4", "1:4"):
        masks = prune.prune_model(model, granularity=layout, layers=["0"])
    elif layout == "bsr":
        masks = prune.prune_model(model, 0.5, granularity=(8, 8), layers=["0"])
        kw = {"blocksize": (8, 8)}
    else:
        masks = prune.prune_model(model, 0.8, granularity="fine", layers=["0"])
    if layout in ("bsr", "2:4", "1:4"):
        with torch.no_grad():
            W = model[0].weight.view(model[0].weight.shape[0], -1)
            kept = (W != 0).nonzero()
            W[kept[:40:2, 0], kept[:40:2, 1]] = 0.0  # zeros the format will store
    sk.sparsify(model, layout, layers=["0"], max_density=1.0, **kw)
    assert isinstance(model[0], sk.SparseConv2d if conv else sk.SparseLinear)
    assert model[0].layout == layout
    return model, masks


def _loader(conv=False):
    torch.manual_seed(1)
    x = torch.randn(8, 8, 6, 6) if conv else torch.randn(8, 64)
    return [(x, torch.randint(0, 4, (8,)))] * 3


@pytest.mark.parametrize("layout", ["csc", "sell"])
def test_layouts_that_store_only_nonzeros_say_pruned_weights_are_not_stored(layout):
    model, masks = _packed(layout)
    assert not bool((model[0].values == 0).any())
    msg = (rf"mask for layer '0': got a mask for a packed SparseLinear \(sparsekern\.sparsify, "
           rf"layout '{layout}'\); expected masks for dense layers only\. Layout '{layout}' "
           rf"stores only the nonzeros: its pruned weights are not stored, so they stay zero "
           rf"without a mask")
    with pytest.raises(ValueError, match=msg):
        prune.fine_tune(model, _loader(), masks=masks, progress=False)


@pytest.mark.parametrize("layout, where", [
    ("bsr", "the zeros inside its kept blocks"),
    ("2:4", "the spare slots of its groups of 4 along K with fewer than 2 nonzeros"),
    ("1:4", "the stored slot of each all-zero group of 4 along K"),
])
@pytest.mark.parametrize("conv", [False, True])
def test_layouts_that_store_zeros_name_what_keeps_them_zero(layout, where, conv):
    model, masks = _packed(layout, conv)
    n_zero = int((model[0].values == 0).sum())
    assert n_zero > 0
    cls = "SparseConv2d" if conv else "SparseLinear"
    msg = (rf"mask for layer '0': got a mask for a packed {cls} \(sparsekern\.sparsify, "
           rf"layout '{layout}'\); expected masks for dense layers only\. Layout '{layout}' "
           rf"can store zeros \({re.escape(where)}; this layer stores {n_zero} now\) and "
           rf"trains them like every stored value, so an optimizer step makes them nonzero "
           rf"and a mask "
           rf"cannot hold them: prune\.StoredZeroHolder keeps them at zero \(`with "
           rf"prune\.StoredZeroHolder\(model\):` in your own loop\); prune\.fine_tune and "
           rf"prune\.distill attach it with masks=None or masks of the dense layers")
    with pytest.raises(ValueError, match=msg) as err:
        prune.fine_tune(model, _loader(conv), masks=masks, progress=False)
    assert OLD not in str(err.value)  # the old text, false for a layout that stores zeros


@pytest.mark.parametrize("layout", ["csc", "bsr", "2:4"])
def test_every_entry_point_gives_the_layout_message(layout):
    model, masks = _packed(layout)
    expect = "stores only the nonzeros" if layout == "csc" else "StoredZeroHolder keeps them"
    calls = {
        "MaskHolder": lambda: prune.MaskHolder(model, masks),
        "apply_masks": lambda: prune.apply_masks(model, masks),
        "train": lambda: prune.train(model, _loader(), masks=masks, progress=False),
        "distill": lambda: prune.distill(model, copy.deepcopy(model), [torch.randn(4, 64)],
                                         masks=masks, steps=1, progress=False),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=rf"layout '{re.escape(layout)}'.*{expect}") as e:
            call()
        assert (OLD in str(e.value)) == (layout == "csc"), what


def test_a_csc_layer_holding_explicit_zeros_gets_the_stored_zero_message():
    """csc stores only what it is given: a layer built with explicit zeros stores them, and
    they train like the rest, so the message follows the values, not the name."""
    model, masks = _packed("csc")
    with torch.no_grad():
        model[0].values[:3] = 0.0
    with pytest.raises(ValueError, match=r"Layout 'csc' can store zeros \(zeros among its "
                                         r"stored values; this layer stores 3 now\)"):
        prune.MaskHolder(model, masks)


def _revived(model, zero):
    return int((model[0].values.detach()[zero] != 0).sum())


def _steps(model, opt, conv, n=4):
    for x, y in _loader(conv)[:1] * n:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("layout", ["bsr", "2:4", "1:4"])
@pytest.mark.parametrize("conv", [False, True])
def test_what_the_message_names_keeps_stored_zeros_at_zero(layout, opt, conv):
    """The message's claims: without a holder an optimizer step revives the stored zeros;
    StoredZeroHolder and fine_tune(masks=None) keep them exactly 0 (and the optimizer's state
    there too), while the other stored values train."""
    packed, _ = _packed(layout, conv)
    zero = packed[0].values.detach() == 0

    plain = copy.deepcopy(packed)
    _steps(plain, OPTIMIZERS[opt](plain.parameters()), conv)
    assert _revived(plain, zero) > 0

    held = copy.deepcopy(packed)
    o = OPTIMIZERS[opt](held.parameters())
    with prune.StoredZeroHolder(held):
        _steps(held, o, conv)
    assert _revived(held, zero) == 0
    assert not torch.equal(held[0].values[~zero], packed[0].values[~zero])
    for t in o.state[held[0].values].values():
        if isinstance(t, torch.Tensor) and t.shape == zero.shape:
            assert not bool(t[zero].any())  # no momentum / Adam moments grew there
    x = _loader(conv)[0][0]
    W = held[0].weight.to_dense()  # the forward runs the held values (no stale copy)
    with torch.no_grad():
        ref = (nn.functional.conv2d(x, W.view(16, 8, 3, 3), held[0].bias, padding=1) if conv
               else nn.functional.linear(x, W, held[0].bias))
        torch.testing.assert_close(held[0](x), ref, atol=1e-5, rtol=1e-5)

    tuned = copy.deepcopy(packed)
    o = OPTIMIZERS[opt](tuned.parameters())
    prune.fine_tune(tuned, _loader(conv), optimizer=o, progress=False)
    assert _revived(tuned, zero) == 0


@pytest.mark.parametrize("layout", ["csc", "bsr", "2:4"])
def test_a_stricter_mask_for_a_packed_layer_says_how_to_prune_further(layout):
    """A mask that prunes more than the packed layer holds is a request for more pruning:
    'not needed' alone would drop it silently (found by a new-user trial)."""
    model, masks = _packed(layout)
    stricter = masks["0"].clone()
    stricter[:8, :] = False  # more pruning than the layer holds
    with pytest.raises(ValueError, match=r"This mask would also zero \d+ of the layer's \d+ "
                                         r"nonzero weights: to prune further, unpack it"):
        prune.MaskHolder(model, {"0": stricter})
    with pytest.raises(ValueError) as e:  # the layer's own mask: no such note
        prune.MaskHolder(model, {"0": masks["0"]})
    assert "would also zero" not in str(e.value)
