"""A new user's workflows on real model code (tiny random transformers configs built in
process, no download): what a pruned, sparsified BERT / GPT-2 must do exactly as the
masked dense model does."""
import copy

import pytest
import torch
from torch import nn

import sparsekern as sk
from tests.helpers import random_pattern_weight, rel_err

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

LAYOUTS = [("2:4", None), ("1:4", None), ("bsr", (4, 4)), ("csc", None)]


def _bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=32, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def _with_pattern(model, layout, blocksize, seed=0):
    """Give every nn.Linear of ``model`` a fresh random weight with ``layout``'s pattern."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(random_pattern_weight(*m.weight.shape, layout, density=0.2,
                                                     blocksize=blocksize or (4, 4), generator=g))
    return model


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # padding
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_sparsified_bert_runs_under_cpu_autocast_as_the_dense_model(layout, blocksize, dtype):
    """torch.autocast on the CPU: nn.Linear computes in the autocast dtype, so the next layer
    gets half-precision activations; a sparse layer must do what nn.Linear does (it raised
    'B has dtype torch.bfloat16 but the sparse values have dtype torch.float32')."""
    dense = _with_pattern(_bert(), layout, blocksize)
    kw = {"blocksize": blocksize} if blocksize else {}
    sparse = sk.sparsify(copy.deepcopy(dense), layout=layout, **kw)
    assert {v[0] for v in sparse.sparsekern_report.values()} == {layout}
    batch = _inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        ref = dense(**batch).last_hidden_state
        out = sparse(**batch).last_hidden_state
    assert out.dtype == ref.dtype
    assert rel_err(out, ref) < 2e-2
    # float64 truth: the dense model with the weights rounded as autocast rounds them
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_a_training_step_under_cpu_autocast_matches_the_dense_one(layout, blocksize):
    dense = _with_pattern(_bert(), layout, blocksize)
    kw = {"blocksize": blocksize} if blocksize else {}
    sparse = sk.sparsify(copy.deepcopy(dense), layout=layout, **kw)
    batch = _inputs()
    proj = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    grads = []
    for m in (dense, sparse):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(**batch).last_hidden_state
        (y.float() * proj).sum().backward()
        lin = m.encoder.layer[0].output.dense
        g = lin.weight.grad if isinstance(lin, nn.Linear) else lin.values.grad
        assert g is not None and g.dtype == torch.float32
        grads.append(m.embeddings.word_embeddings.weight.grad)
    assert rel_err(grads[1], grads[0]) < 5e-2


def test_spmm_under_autocast_computes_in_the_autocast_dtype_and_leaves_float64_alone():
    W = random_pattern_weight(24, 40, "csc", density=0.3)
    A = sk.to_sparse(W, layout="csc")
    x = torch.randn(5, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sk.linear(x, A)
        ref = torch.nn.functional.linear(x, W)
    assert y.dtype == ref.dtype == torch.bfloat16
    assert rel_err(y, ref) < 1e-2
    A64 = sk.to_sparse(W.double(), layout="csc")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y64 = sk.linear(x.double(), A64)
    assert y64.dtype == torch.float64
    assert rel_err(y64, x.double() @ W.double().T) < 1e-12
