"""Masks of every granularity: counts, groups, which weights go, spellings."""
import warnings

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.prune.granularity import NM, Block, Channel, Fine, Kernel, prefix_to_prune


def _linear(out, inp, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inp, out))


def test_fine_prunes_exactly_the_smallest_weights():
    model = _linear(33, 70)
    W = model[0].weight.detach().clone()
    mask = prune.prune_model(model, 0.7)["0"]
    assert int((~mask).sum()) == round(0.7 * W.numel())
    assert W[mask].abs().min() >= W[~mask].abs().max()
    assert torch.equal(model[0].weight[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(model[0].weight[mask], W[mask])  # kept weights untouched


def test_ratio_zero_keeps_everything():
    model = _linear(8, 8)
    assert prune.prune_model(model, 0.0)["0"].all()


def test_global_scope_uses_one_threshold():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        model[2].weight.mul_(10)  # the second layer's weights are all larger
    masks = prune.prune_model(model, 0.5, scope="global")
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * total)
    assert (~masks["0"]).float().mean() > 0.6 > (~masks["2"]).float().mean()


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8)])
@pytest.mark.parametrize("K", [16, 10, 9])
def test_n_m_keeps_the_n_largest_of_every_m_along_k(n, m, K):
    model = _linear(6, K, seed=K)
    W = model[0].weight.detach().clone()
    mask = prune.prune_model(model, granularity=f"{n}:{m}")["0"]
    Kp = -(-K // m) * m
    padded = torch.nn.functional.pad(mask, (0, Kp - K)).reshape(6, Kp // m, m)
    full = K // m
    assert (padded[:, :full].sum(-1) == n).all()
    if K % m:  # partial last group keeps min(n, its size)
        assert (padded[:, full].sum(-1) == min(n, K % m)).all()
    for r in range(6):
        for g in range(Kp // m):
            cols = list(range(g * m, min(K, g * m + m)))
            kept = [c for c in cols if mask[r, c]]
            dropped = [c for c in cols if not mask[r, c]]
            if kept and dropped:
                assert W[r, kept].abs().min() >= W[r, dropped].abs().max()
    sk.to_sparse(model[0].weight.detach(), "2:4")  # every N:M here packs as 2:4


def test_n_m_on_conv_groups_along_in_kh_kw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3))
    mask = prune.prune_model(model, granularity="2:4")["0"]
    flat = mask.reshape(5, 27)
    assert (torch.nn.functional.pad(flat, (0, 1)).reshape(5, 7, 4).sum(-1) <= 2).all()
    sk.to_sparse(model[0].weight.detach().flatten(1), "2:4")


@pytest.mark.parametrize("bs", [(1, 8), (8, 1), (32, 32), (4, 4)])
@pytest.mark.parametrize("shape", [(64, 96), (50, 70)])
def test_blocks_are_pruned_whole_and_by_mean_magnitude(bs, shape):
    bm, bk = bs
    model = _linear(*shape)
    W = model[0].weight.detach().clone()
    mask = prune.prune_model(model, 0.5, granularity=bs)["0"]
    M, K = shape
    Mb, Kb = -(-M // bm), -(-K // bk)
    pm = torch.nn.functional.pad(mask, (0, Kb * bk - K, 0, Mb * bm - M), value=True)
    blocks = pm.reshape(Mb, bm, Kb, bk).permute(0, 2, 1, 3).reshape(Mb, Kb, -1)
    # Whole blocks: inside the matrix a block is all kept or all pruned.
    real = torch.nn.functional.pad(torch.ones(M, K, dtype=torch.bool),
                                   (0, Kb * bk - K, 0, Mb * bm - M))
    real_b = real.reshape(Mb, bm, Kb, bk).permute(0, 2, 1, 3).reshape(Mb, Kb, -1)
    kept_any = (blocks & real_b).any(-1)
    kept_all = (blocks | ~real_b).all(-1)
    assert torch.equal(kept_any, kept_all)
    # The ratio counts weights: whole blocks come within half a block of it.
    assert abs(int((~mask).sum()) - 0.5 * M * K) <= bm * bk / 2
    # A kept block's mean |w| is at least any pruned block's.
    Wp = torch.nn.functional.pad(W.abs(), (0, Kb * bk - K, 0, Mb * bm - M))
    sums = Wp.reshape(Mb, bm, Kb, bk).permute(0, 2, 1, 3).reshape(Mb, Kb, -1).sum(-1)
    means = sums / real_b.sum(-1)
    assert means[kept_any].min() >= means[~kept_any].max() - 1e-6
    fmt = sk.to_sparse(model[0].weight.detach(), "bsr", blocksize=bs)
    assert fmt.values.shape[0] <= int(kept_any.sum())


def test_l2_ranks_a_block_with_one_large_weight_above_l1():
    model = nn.Sequential(nn.Linear(8, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[4.0, 0, 0, 0, 1.5, 1.5, 1.5, 1.5]]))
    l1 = prune.prune_model(model, 0.5, (1, 4), "l1", apply=False)["0"]
    l2 = prune.prune_model(model, 0.5, (1, 4), "l2", apply=False)["0"]
    assert l1[0].tolist() == [False] * 4 + [True] * 4  # mean |w|: 1.0 < 1.5
    assert l2[0].tolist() == [True] * 4 + [False] * 4  # rms: 2.0 > 1.5


def test_kernel_granularity_prunes_whole_kernels_of_conv2d_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(6, 3))
    lin_before = model[2].weight.detach().clone()
    masks = prune.prune_model(model, 0.5, "kernel")
    assert list(masks) == ["0"]  # kernel granularity: Conv2d layers only by default
    k = masks["0"].reshape(6, 4, 9)
    assert torch.equal(k.all(-1), k.any(-1))
    assert int((~k.any(-1)).sum()) == 12
    assert torch.equal(model[2].weight, lin_before)


def test_earlier_masks_stay_pruned():
    model = _linear(16, 16)
    first = prune.prune_model(model, 0.3)
    with torch.no_grad():  # a pruned weight regrown (large): the earlier mask still wins
        model[0].weight[~first["0"]] = 100.0
    second = prune.prune_model(model, 0.6, masks=first)
    assert not (second["0"] & ~first["0"]).any()
    assert int((~second["0"]).sum()) == round(0.6 * 256)


def test_apply_false_leaves_weights():
    model = _linear(8, 8)
    W = model[0].weight.detach().clone()
    masks = prune.prune_model(model, 0.5, apply=False)
    assert torch.equal(model[0].weight, W)
    prune.apply_masks(model, masks)
    assert int((model[0].weight == 0).sum()) == 32


@pytest.mark.parametrize("spec,expected", [
    ("fine", Fine()), ("2:4", NM(2, 4)), ("n:m", NM(2, 4)), ("1:4", NM(1, 4)), ("2:8", NM(2, 8)),
    ((32, 32), Block(32, 32)), ("1x8", Block(1, 8)), ("8X1", Block(8, 1)), ("kernel", Kernel()),
    ("channel", Channel())])
def test_spellings(spec, expected):
    assert prune.parse_granularity(spec) == expected


def test_masks_and_sparsity_helpers():
    model = _linear(10, 10)
    prune.prune_model(model, 0.4)
    assert prune.sparsity(model) == {"0": 0.4, "total": 0.4}
    m = prune.masks_from_zeros(model)["0"]
    assert int((~m).sum()) == 40


# -- block ratio: a fraction of the weights, as nearly as whole blocks allow ------------------

ODD_BLOCKS = [(40, 40, (32, 32)), (200, 200, (32, 32)), (64, 64, (64, 64))]


def _block_prune(out, inp, bs, ratio, criterion, seed=0):
    """(achieved fraction of weights removed, the UserWarnings' texts, the mask)."""
    model = _linear(out, inp, seed)
    calib = None if criterion == "l1" else torch.randn(4 * inp, inp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = prune.prune_model(model, ratio, bs, criterion, calib=calib)["0"]
    texts = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return 1.0 - mask.float().mean().item(), texts, mask


@pytest.mark.parametrize("criterion", ["l1", "wanda", "sparsegpt"])
@pytest.mark.parametrize("out,inp,bs", ODD_BLOCKS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.6])
def test_block_ratio_counts_weights_within_half_the_largest_block(criterion, out, inp, bs,
                                                                   ratio):
    got, _, _ = _block_prune(out, inp, bs, ratio, criterion, seed=int(ratio * 10))
    largest = min(bs[0], out) * min(bs[1], inp) / (out * inp)
    assert got < 1.0  # a ratio below 1 never zeroes a whole layer
    if largest < 1.0:  # a layer that is one block: all of it is not an option
        assert abs(got - ratio) <= largest / 2 + 1e-9


def _closest_prefix_reference(W, bs, ratio):
    """Keep mask of l1 block pruning, written out: blocks by mean |w| (ties: by position),
    the shortest prefix but the whole whose weights come closest to ratio * numel."""
    (M, K), (bm, bk) = W.shape, bs
    blocks = [(W[r:r + bm, c:c + bk].abs().double().mean().item(), r, c)
              for r in range(0, M, bm) for c in range(0, K, bk)]
    order = sorted(range(len(blocks)), key=lambda i: (blocks[i][0], i))
    target, removed, best, best_k = ratio * M * K, 0, ratio * M * K, 0
    for k, i in enumerate(order[:-1], 1):  # never every block: ratio < 1 keeps one
        _, r, c = blocks[i]
        removed += W[r:r + bm, c:c + bk].numel()
        if abs(removed - target) < best - 1e-9:
            best, best_k = abs(removed - target), k
    keep = torch.ones(M, K, dtype=torch.bool)
    for i in order[:best_k]:
        _, r, c = blocks[i]
        keep[r:r + bm, c:c + bk] = False
    return keep


@pytest.mark.parametrize("out,inp,bs", ODD_BLOCKS + [(50, 70, (8, 16)), (33, 20, (1, 8))])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
def test_l1_blocks_match_the_closest_prefix_reference(out, inp, bs, ratio):
    W = _linear(out, inp, seed=out + inp)[0].weight.detach().clone()
    _, _, mask = _block_prune(out, inp, bs, ratio, "l1", seed=out + inp)
    assert torch.equal(mask, _closest_prefix_reference(W, bs, ratio))


def test_prefix_to_prune_takes_the_closest_prefix_and_fewer_on_a_tie():
    sizes = torch.tensor([1024.0, 256.0, 256.0, 64.0])
    assert prefix_to_prune(sizes, 800.0) == 1  # 1024 (224 over) beats 0 (800 under)
    assert prefix_to_prune(sizes, 1600.0) == 4
    assert prefix_to_prune(sizes, 512.0) == 0  # a tie: remove fewer
    assert prefix_to_prune(torch.tensor([4096.0]), 2048.0) == 0
    assert prefix_to_prune(torch.tensor([4096.0]), 2458.0) == 1
    assert prefix_to_prune(sizes, 0.0) == 0 and prefix_to_prune(sizes, 1e9) == 4


@pytest.mark.parametrize("criterion", ["l1", "wanda", "sparsegpt"])
def test_a_block_ratio_whole_blocks_cannot_reach_is_warned_about(criterion):
    # one 64x64 block: 0.5 is a tie between removing nothing and everything
    got, texts, _ = _block_prune(64, 64, (64, 64), 0.5, criterion)
    assert got == 0.0
    [text] = [t for t in texts if "block granularity" in t]
    assert text.startswith("layer '0' (64x64): block granularity 64x64 removes 0 of the "
                           "weights, not the requested ratio 0.5")
    # 40x40 in 32x32 blocks (1024, 256, 256 and 64 weights): nothing comes near 0.5
    got, texts, _ = _block_prune(40, 40, (32, 32), 0.5, criterion)
    [text] = [t for t in texts if "block granularity" in t]
    assert f"removes {got:.4g} of the weights, not the requested ratio 0.5" in text
    assert "layer '0' (40x40): block granularity 32x32" in text


@pytest.mark.parametrize("criterion", ["l1", "wanda", "sparsegpt"])
@pytest.mark.parametrize("gran,ratio", [((32, 32), 0.5), ((64, 64), 0.75), ((8, 8), 0.37),
                                        ("fine", 0.5), ("2:4", None)])
def test_a_reachable_ratio_is_not_warned_about(criterion, gran, ratio):
    model = _linear(128, 128, seed=3)
    calib = None if criterion == "l1" else torch.randn(512, 128)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.prune_model(model, ratio, gran, criterion, calib=calib)
    assert not [w for w in caught if "block granularity" in str(w.message)]


def test_iterative_block_pruning_below_ratio_1_never_zeroes_a_layer():
    """A small layer whose held block makes "every block" the closest to a later ratio keeps
    one block (its output is not its bias alone); the warning points at the caller's line."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.ReLU(), torch.nn.Linear(40, 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.iterative_prune(model, (0.3, 0.5, 0.7), granularity=(32, 32), progress=False)
    assert bool((model[2].weight != 0).any()) and bool((model[0].weight != 0).any())
    blocks = [w for w in caught if "block granularity 32x32" in str(w.message)]
    assert blocks and all(w.filename == __file__ for w in blocks)
    assert "removing whole blocks in score order" in str(blocks[0].message)


@pytest.mark.parametrize("criterion", ["l1", "sparsegpt"])
def test_a_one_block_layer_below_ratio_1_keeps_its_block(criterion):
    got, texts, _ = _block_prune(64, 64, (64, 64), 0.6, criterion, seed=1)
    assert got == 0.0 and any("removes 0 of the weights" in t for t in texts)
