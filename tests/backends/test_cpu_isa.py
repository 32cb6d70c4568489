"""The run-time ISA switch SPARSEKERN_CPU_ISA: every ISA the machine has agrees with the
portable kernels and the reference, on edge shapes too."""
import pytest
import torch

import sparsekern as sk
from sparsekern import _extension

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
C = _extension._C

needs_avx2 = pytest.mark.skipif(C is None or not C.cpu_has_avx2(),
                                reason="this CPU has no AVX2/FMA/F16C")


def _available_isas():
    if C is None:
        return []
    return [isa for isa, has in (("avx2", C.cpu_has_avx2()), ("avx512", C.cpu_has_avx512()))
            if has]


def _isa_params():
    """Every vector ISA, each skipped (with the reason) where this CPU lacks it."""
    have = set(_available_isas())
    return [pytest.param(isa, marks=pytest.mark.skipif(isa not in have,
                                                       reason=f"this CPU/OS has no {isa}"))
            for isa in ("avx2", "avx512")]


def test_switch_is_read_on_reload(cpu_isa_env):
    cpu_isa_env("portable")
    assert C.cpu_isa() == "portable"
    best = "avx512" if C.cpu_has_avx512() else "avx2" if C.cpu_has_avx2() else "portable"
    cpu_isa_env("auto")
    assert C.cpu_isa() == best
    cpu_isa_env(None)
    assert C.cpu_isa() == best
    for isa in _available_isas():
        cpu_isa_env(isa)
        assert C.cpu_isa() == isa


def test_avx512_implies_avx2():
    assert not C.cpu_has_avx512() or C.cpu_has_avx2()


def test_unknown_isa_is_rejected_naming_the_choices(cpu_isa_env):
    A = sk.to_sparse(torch.randn(8, 8), layout="csc")
    cpu_isa_env("sse9")
    with pytest.raises(ValueError, match="'sse9'.*'portable', 'avx2', 'avx512', 'auto'"):
        torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(8, 2))


@pytest.mark.skipif(C is None or C.cpu_has_avx512(), reason="this CPU has AVX-512")
def test_forcing_a_missing_avx512_is_an_error(cpu_isa_env):
    A = sk.to_sparse(torch.randn(8, 8), layout="csc")
    cpu_isa_env("avx512")
    with pytest.raises(ValueError, match="SPARSEKERN_CPU_ISA='avx512' but this CPU"):
        torch.ops.sparsekern.spmm(*A.op_args(), torch.randn(8, 2))


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("layout,block", [("2:4", None), ("bsr", (32, 32)), ("bsr", (1, 8)),
                                          ("bsr", (4, 1)), ("bsr", (8, 1)), ("bsr", (5, 7)),
                                          ("csc", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_each_isa_and_portable_agree(cpu_isa_env, isa, layout, block, dtype):
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
    for N in (1, 3, 8, 15, 16, 17, 24, 33, 70):
        B = torch.randn(N, K).t()
        outs = {}
        for which in (isa, "portable"):
            cpu_isa_env(which)
            assert C.cpu_isa() == which
            outs[which] = torch.ops.sparsekern.spmm(*A.op_args(), B)
        torch.testing.assert_close(outs[isa], outs["portable"], rtol=1e-5, atol=1e-5)
        ref = A.to_dense().double() @ B.double()
        torch.testing.assert_close(outs[isa].double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", _isa_params())
@pytest.mark.parametrize("layout", ["2:4", "bsr", "csc"])
@pytest.mark.parametrize("M,K", [(1, 4), (17, 36), (33, 100), (64, 260), (5, 1028)])
def test_each_isa_on_edge_shapes(cpu_isa_env, isa, layout, M, K):
    """M, K, N not multiples of the vector widths (8, 16, 32 columns per step), N=1, bias,
    row- and column-major B, threads splitting the rows: the reference result."""
    g = torch.Generator().manual_seed(M * 1000 + K)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        G = W.reshape(M, K // 4, 4)
        W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
        A = sk.to_sparse(W, layout="2:4")
    elif layout == "bsr":
        W = W * (torch.rand(M, K, generator=g) < 0.5)
        A = sk.to_sparse(W, layout="bsr", blocksize=(8, 4))
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.3)
        A = sk.to_sparse(W, layout="csc")
    cpu_isa_env(isa)
    bias = torch.randn(M, generator=g)
    for N in (1, 2, 15, 16, 17, 31, 32, 33, 65):
        for B in (torch.randn(K, N, generator=g), torch.randn(N, K, generator=g).t()):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
            ref = (W.double() @ B.double() + bias.double()[:, None]).float()
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
