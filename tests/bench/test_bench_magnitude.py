"""The harness's tiny magnitude pruner and the case operands."""
import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.bench import magnitude, operands
from sparsekern.bench.cases import Case, Shape

G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("K", [8, 10, 13])
def test_2to4_keeps_the_two_largest_of_each_group(K):
    W = torch.randn(6, K, generator=G)
    P = magnitude.prune_2to4(W)
    sk.to_sparse(P, layout="2:4")  # raises if any group holds more than 2 nonzeros
    Wp = nn.functional.pad(W, (0, -K % 4)).reshape(6, -1, 4).abs()
    Pp = nn.functional.pad(P, (0, -K % 4)).reshape(6, -1, 4)
    kept_min = torch.where(Pp != 0, Wp, torch.inf).amin(-1)
    dropped_max = torch.where(Pp == 0, Wp, -torch.inf).amax(-1)
    assert bool((kept_min >= dropped_max).all())
    assert bool(((P == 0) | (P == W)).all())


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 1.0])
def test_unstructured_zeroes_an_exact_count_of_the_smallest(sparsity):
    W = torch.randn(40, 50, generator=G)
    P = magnitude.prune_unstructured(W, sparsity)
    assert int((P == 0).sum()) == round(sparsity * W.numel())
    if 0 < sparsity < 1:
        assert float(W[P == 0].abs().max()) <= float(W[P != 0].abs().min())


@pytest.mark.parametrize("sparsity,block", [(0.7, (4, 4)), (0.9, (16, 8)), (0.5, (32, 32))])
def test_blocks_zero_whole_blocks_of_smallest_norm(sparsity, block):
    W = torch.randn(64, 96, generator=G)
    P = magnitude.prune_blocks(W, sparsity, block)
    bm, bk = block
    nz = (P != 0).reshape(64 // bm, bm, 96 // bk, bk).any(3).any(1)
    n_blocks = nz.numel()
    assert int((~nz).sum()) == round(sparsity * n_blocks)
    norms = W.abs().reshape(64 // bm, bm, 96 // bk, bk).sum((1, 3))
    assert float(norms[~nz].max()) <= float(norms[nz].min())


def test_blocks_with_ragged_edges():
    W = torch.randn(50, 70, generator=G)
    P = magnitude.prune_blocks(W, 0.8, (16, 16))
    A = sk.to_sparse(P, layout="bsr", blocksize=(16, 16))
    assert A.values.shape[0] == round(0.2 * 4 * 5)


def test_prune_dispatch_and_errors():
    W = torch.randn(8, 8, generator=G)
    assert torch.equal(magnitude.prune(W, "2:4", 0.5), magnitude.prune_2to4(W))
    with pytest.raises(ValueError, match="needs blocksize"):
        magnitude.prune(W, "bsr", 0.5)
    with pytest.raises(ValueError, match="layout must be"):
        magnitude.prune(W, "coo", 0.5)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\]"):
        magnitude.prune_unstructured(W, 1.5)
    with pytest.raises(ValueError, match="W must be a 2-D float tensor"):
        magnitude.prune_unstructured(torch.ones(3), 0.5)


def test_prune_model_prunes_every_linear():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    done = magnitude.prune_model(model, "csc", 0.75)
    assert set(done) == {"0", "2"}
    assert all(v == pytest.approx(0.75) for v in done.values())


def test_operands_are_reproducible_and_never_zero():
    case = Case("csc", Shape("t", 24, 40, "test"), 5, 0.7)
    W1, W2 = operands.weight(case), operands.weight(case)
    assert torch.equal(W1, W2)
    assert int((W1 == 0).sum()) == round(0.7 * W1.numel())
    x = operands.activations(case)
    assert x.shape == (5, 40) and bool((x != 0).all())
    assert not torch.equal(x, operands.activations(case, index=1))
    relu = operands.activations(Case("csc", case.shape, 64, 0.7, activation="relu"))
    assert 0.3 < float((relu == 0).float().mean()) < 0.7


def test_weight_does_not_depend_on_n():
    s = Shape("t", 24, 40, "test")
    assert torch.equal(operands.weight(Case("csc", s, 1, 0.7)), operands.weight(Case("csc", s, 32, 0.7)))
