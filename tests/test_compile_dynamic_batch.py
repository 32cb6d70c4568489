"""A compiled training step through sparse layers compiles once for every batch size.

The trial's defect: with grad enabled, torch.compile of a model with SparseLinear layers
recompiled for each new batch size (a guard like ``Eq(s33, 8)``), so a training loop with
varying batch sizes reached torch's recompile limit (8) and fell back to eager. The guard
came from the backward of spmm's C++ autograd node, which AOTAutograd traces: it read the
sizes of the input gradient as plain ints (laid_out_like, csrc/ops.cpp) before it checked
for a traced tensor. It now checks first (csrc/ops.cpp, traced()).
"""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import sparsekern as sk

from .helpers import random_pattern_weight

LAYOUTS = [("csc", None), ("bsr", (4, 4)), ("2:4", None)]
BATCHES = (3, 5, 8, 11, 17)  # the first compile is static, the second dynamic; no more after
K, H, M = 24, 16, 8


def _model(layout: str, block) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    layers = []
    for out_f, in_f in ((H, K), (M, H)):
        W = random_pattern_weight(out_f, in_f, layout, density=0.4, blocksize=block or (4, 4),
                                  generator=g)
        fmt = sk.to_sparse(W, layout=layout, blocksize=block)
        layers.append(sk.SparseLinear(fmt, torch.randn(out_f, generator=g)))
    return torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1])


def _step(model: torch.nn.Module, fn, x: torch.Tensor):
    """Output and the gradients of x and every parameter after one backward."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    y = fn(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


def _check(layout, block, backend):
    torch._dynamo.reset()
    model = _model(layout, block)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter)
    for n in BATCHES:
        x = torch.randn(n, K, generator=torch.Generator().manual_seed(n))
        want = _step(model, model, x)
        got = _step(model, compiled, x)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    # 1 static graph, then 1 dynamic one for every later batch size (was 1 per batch size)
    assert counter.frame_count <= 2, (
        f"{layout}: {counter.frame_count} graphs for batch sizes {BATCHES} (recompiled per "
        f"batch size)")


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=[l for l, _ in LAYOUTS])
def test_compiled_training_compiles_once_for_any_batch(layout, block):
    _check(layout, block, "aot_eager")


def test_compiled_training_compiles_once_for_any_batch_inductor():
    _check("csc", None, "inductor")


@pytest.mark.parametrize("layout,block", LAYOUTS, ids=[l for l, _ in LAYOUTS])
def test_compiled_inference_compiles_once_for_any_batch(layout, block):
    torch._dynamo.reset()
    model = _model(layout, block)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter)
    with torch.no_grad():
        for n in BATCHES:
            x = torch.randn(n, K)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    assert counter.frame_count <= 2


def test_eager_autograd_keeps_the_cpp_node():
    """The fix stays in the C++ node: an eager call still records it (a fraction of the
    Python formula's per-call cost, sparsekern/ops.py)."""
    if sk._extension._C is None:
        pytest.skip("no compiled extension: the Python formula is the only one")
    model = _model("csc", None)
    y = model[0](torch.randn(3, K))  # y = spmm(...).t()
    node = y.grad_fn.next_functions[0][0]
    assert "SpmmFunction" in node.name(), node.name()
