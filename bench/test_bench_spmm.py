"""One benchmark per (case, candidate); a case's candidates share a pytest-benchmark group.

Group = case id, e.g. ``csc/minilm.ffn_up-1536x384/N32/s90``: the sparsekern op and, beside
it, the dense baselines (torch F.linear / matmul, NumPy BLAS; cuBLAS on GPU) and the peers
(torch.sparse CSR/BSR; torch semi-structured 2:4 and BSR Triton on GPU), all on the same
pruned weight and input. Each candidate's result is checked before it is timed; a wrong
result fails the test. Timing is reported, never asserted.
"""
import pytest
import torch
import torch.nn.functional as F

from sparsekern.bench import operands, runner
from sparsekern.bench.candidates import build_candidates, candidate_names
from sparsekern.bench.cases import matrix

CASES = matrix("suite")
DEVICES = [("cpu", ()), ("cuda", (pytest.mark.gpu,))]
PARAMS = [pytest.param(case, name, device, id=f"{device}:{case.id}:{name}", marks=marks)
          for device, marks in DEVICES for case in CASES
          for name in candidate_names(case.layout, device)]

pytestmark = pytest.mark.benchmark(min_rounds=3, max_time=0.1, warmup=True,
                                   warmup_iterations=2)

_weights = runner.WeightCache()


def _dtype(device):
    return torch.float16 if device == "cuda" else torch.float32


@pytest.mark.parametrize("case,name,device", PARAMS)
def test_spmm(benchmark, case, name, device):
    s = runner.RunSettings(device=device, dtype=_dtype(device))
    W, conversions = _weights.get(case, s)
    cand = next(c for c in build_candidates(case, W, s.max_reference_work, conversions)
                if c.name == name)
    if cand.fn is None:
        pytest.skip(cand.reason)
    x = operands.activations(case, s.dtype, device, s.seed)
    ref = F.linear(x.float(), W.float())
    rec = runner.check(cand, x, ref, runner.tolerance(s.dtype, device))
    if rec["status"] == "failed" and cand.kind == "peer":
        pytest.skip(f"{name} cannot run this case here: {rec['reason']}")
    assert rec["status"] == "ok", f"{name} on {case.id}: {rec['reason']}"

    benchmark.group = f"{device}:{case.id}"
    benchmark.extra_info.update(case.to_dict(), kind=cand.kind, device=device,
                                rel_error=rec["rel_error"], **cand.info)
    arg = cand.prepare(x)
    fn = cand.fn
    if device == "cuda":
        def fn(a, f=cand.fn):
            out = f(a)
            torch.cuda.synchronize()
            return out
    benchmark(fn, arg)
