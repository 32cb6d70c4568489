"""Whole-model latency, dense vs pruned + sparsified (one group per model and batch).

MiniLM-L6 by default (SPARSEKERN_BENCH_FULL=1 adds BERT-base and the Llama-7B MLP block),
batch 1 and 32 tokens, variants 2:4, 90% 32x32 blocks, 90% unstructured (CSC). The
sparsified model's output is checked against the pruned dense model before timing.
"""
import os

import pytest
import torch

from sparsekern.bench import e2e, models
from sparsekern.bench.cases import FULL_ENV
from sparsekern.bench.runner import RunSettings, rel_error

FULL = os.environ.get(FULL_ENV, "") not in ("", "0")
MODELS = e2e.FULL_MODELS if FULL else e2e.QUICK_MODELS
VARIANTS = {v.name: v for v in e2e.VARIANTS}

pytestmark = pytest.mark.benchmark(min_rounds=3, max_time=0.2, warmup=True,
                                   warmup_iterations=1)

_built = {}


def _model(name, variant):
    """Dense model, or (pruned dense, sparse) for a variant; one cached at a time per model."""
    key = (name, variant)
    if key not in _built:
        for k in [k for k in _built if k[0] != name]:
            del _built[k]  # one model's variants at a time: the Llama MLP is 540 MB
        if variant == "dense":
            _built[key] = models.build(name)
        else:
            _built[key] = e2e.make_sparse(_model(name, "dense"), VARIANTS[variant])
    return _built[key]


@pytest.mark.parametrize("batch", e2e.BATCHES)
@pytest.mark.parametrize("variant", ["dense"] + list(VARIANTS))
@pytest.mark.parametrize("name", MODELS)
def test_model(benchmark, name, variant, batch):
    s = RunSettings()
    x = torch.randn(1, batch, models.hidden_size(name), generator=torch.Generator().manual_seed(0))
    if variant == "dense":
        model = _model(name, "dense")
    else:
        pruned, model = _model(name, variant)
        work = e2e.reference_work(model, batch, "cpu", torch.float32)
        if work > s.max_reference_work_model:
            pytest.skip(f"{variant} layers are served by the reference backend (no kernel yet)")
        with torch.inference_mode():
            err = rel_error(model(x), pruned(x))
        assert err <= 1e-3, f"{name} {variant}: relative error {err:.3g} vs the pruned model"
        benchmark.extra_info["layers"] = e2e.layer_backends(model, batch, "cpu", torch.float32)
    benchmark.group = f"model:{name}/batch{batch}"
    benchmark.extra_info.update(model=name, variant=variant, batch=batch)
    with torch.inference_mode():
        benchmark(model, x)
