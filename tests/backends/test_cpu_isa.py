"""The run-time ISA switch SPARSEKERN_CPU_ISA: the AVX2 and portable kernels agree."""
import pytest
import torch

import sparsekern as sk
from sparsekern import _extension

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
C = _extension._C

needs_avx2 = pytest.mark.skipif(C is None or not C.cpu_has_avx2(),
                                reason="this CPU has no AVX2/FMA/F16C")


def test_switch_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CPU_ISA", "portable")
    assert C.cpu_isa() == "portable"
    monkeypatch.setenv("SPARSEKERN_CPU_ISA", "auto")
    assert C.cpu_isa() == ("avx2" if C.cpu_has_avx2() else "portable")
    monkeypatch.delenv("SPARSEKERN_CPU_ISA")
    assert C.cpu_isa() == ("avx2" if C.cpu_has_avx2() else "portable")


@needs_avx2
@pytest.mark.parametrize("layout,block", [("2:4", None), ("bsr", (32, 32)), ("bsr", (1, 8)),
                                          ("bsr", (4, 1)), ("bsr", (8, 1)), ("csc", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_avx2_and_portable_agree(monkeypatch, layout, block, dtype):
    torch.manual_seed(0)
    M, K = 70, 132
    W = torch.randn(M, K)
    if layout == "2:4":
        W = W.reshape(M, K // 4, 4)
        W = W.scatter(-1, W.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
        A = sk.to_sparse(W.to(dtype), layout="2:4")
    elif layout == "bsr":
        A = sk.to_sparse(W.to(dtype), layout="bsr", blocksize=block)
    else:
        A = sk.to_sparse((W * (torch.rand(M, K) < 0.2)).to(dtype), layout="csc")
    for N in (1, 3, 8, 24, 33):
        B = torch.randn(N, K).t()
        outs = {}
        for isa in ("avx2", "portable"):
            monkeypatch.setenv("SPARSEKERN_CPU_ISA", isa)
            assert C.cpu_isa() == isa
            outs[isa] = torch.ops.sparsekern.spmm(*A.op_args(), B)
        torch.testing.assert_close(outs["avx2"], outs["portable"], rtol=1e-5, atol=1e-5)
