"""Property tests (hypothesis): pack -> unpack and spmm vs the float64 dense product."""
import pytest
import torch

# A missing hypothesis skips this module instead of failing the whole collection (the GPU
# machine's image may lack it).
hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
given, settings, st = hypothesis.given, hypothesis.settings, hypothesis.strategies

import sparsekern as sk
from sparsekern.formats import layouts as layout_registry
from tests.helpers import TOL, dense_ref, random_pattern_weight, rel_err

layouts = st.sampled_from(list(layout_registry.names()))  # every registered layout
dims = st.integers(min_value=0, max_value=40)


@st.composite
def problems(draw):
    layout = draw(layouts)
    M, K, N = draw(dims), draw(dims), draw(st.integers(0, 9))
    density = draw(st.floats(0.0, 1.0))
    bm, bk = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    return layout, M, K, N, density, (bm, bk), seed


@settings(max_examples=80, deadline=None)
@given(problems())
def test_pack_unpack(p):
    layout, M, K, N, density, bs, seed = p
    g = torch.Generator().manual_seed(seed)
    W = random_pattern_weight(M, K, layout, density=density, blocksize=bs, generator=g)
    A = sk.to_sparse(W, layout=layout, blocksize=bs if layout == "bsr" else None)
    assert torch.equal(A.to_dense(), W)


@settings(max_examples=80, deadline=None)
@given(problems())
def test_spmm_matches_dense(p):
    layout, M, K, N, density, bs, seed = p
    g = torch.Generator().manual_seed(seed)
    W = random_pattern_weight(M, K, layout, density=density, blocksize=bs, generator=g)
    A = sk.to_sparse(W, layout=layout, blocksize=bs if layout == "bsr" else None)
    B = torch.randn(K, N, generator=g)
    out = sk.spmm(A, B)
    assert out.shape == (M, N)
    assert_close_fp32(out, W, B)
    with sk.use_backend("reference"):
        assert_close_fp32(sk.spmm(A, B), W, B)


def assert_close_fp32(out, W, B):
    """Within TOL relative to the result, or elementwise within TOL of |W| @ |B| (the scale of
    float32 rounding when the sum cancels: seen with a 33-term sum, |W||B| = 8.2 for a
    result of -0.007, relative error 2.1e-5 from correct float32 arithmetic)."""
    ref = dense_ref(W, B)
    if rel_err(out, ref) < TOL[torch.float32]:
        return
    scale = W.abs().double() @ B.abs().double()
    err = (out.double() - ref).abs()
    assert bool((err <= TOL[torch.float32] * scale).all()), (rel_err(out, ref), err.max())
