"""Fuzz test (hypothesis) of the three ops over format tensors AND dense operands.

Format tensors are drawn well formed, then possibly damaged (an index moved out of range,
offsets shuffled or cut, 2:4 metadata bytes replaced, a dtype changed); B and G get random
sizes and strides: contiguous, transposed, sliced, stride-0 (expand) in either dimension,
and huge K (rejected before anything is allocated). Property: the default backend (the
compiled kernels where built) and the reference agree: both raise a named error (ValueError,
TypeError or RuntimeError), or both return the same result. Never a crash (the sanitizer job
runs this file too), never a silent difference.
"""
from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import sparsekern as sk  # noqa: E402
from sparsekern import formats  # noqa: E402
from sparsekern.backends import use_backend  # noqa: E402

ERRORS = (ValueError, TypeError, RuntimeError)
LAYOUTS = ("2:4", "bsr", "csc")


@st.composite
def format_tensors(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    if draw(st.integers(0, 9)) == 0:  # a huge K with no stored entry
        K = draw(st.sampled_from([2**31, 2**40, 2**62]))
        M = draw(st.integers(1, 6))
        if layout == "bsr":
            return layout, (torch.empty(0, 1, 1), torch.empty(0, dtype=torch.int32),
                            torch.zeros(M + 1, dtype=torch.int32)), M, K
        if layout == "csc":
            return layout, (torch.empty(0), torch.empty(0, dtype=torch.int16),
                            torch.zeros(3, dtype=torch.int32)), M, K
        return layout, (torch.empty(M, 0), torch.empty(M, 0, dtype=torch.uint8),
                        torch.empty(0, dtype=torch.int32)), M, K
    M = draw(st.integers(0, 12))
    K = draw(st.integers(0, 12)) * (4 if layout == "2:4" and draw(st.booleans()) else 1)
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        Kp = -(-K // 4) * 4
        Wp = torch.nn.functional.pad(W, (0, Kp - K)).reshape(M, Kp // 4, 4)
        Wp = Wp.scatter(-1, Wp.abs().argsort(-1)[..., :2], 0.0)
        W = Wp.reshape(M, Kp)[:, :K].contiguous()
        A = sk.to_sparse(W, layout="2:4")
    elif layout == "bsr":
        bm, bk = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        W = W * (torch.rand(M, K, generator=g) < 0.5)
        A = sk.to_sparse(W, layout="bsr", blocksize=(bm, bk))
    else:
        W = W * (torch.rand(M, K, generator=g) < 0.4)
        A = sk.to_sparse(W, layout="csc")
    values, indices, offsets = (t.clone() for t in A.op_args()[:3])
    damage = draw(st.sampled_from(["none", "none", "index", "offsets", "cut", "dtype"]))
    if damage == "index" and indices.numel():
        flat = indices.view(-1)
        i = draw(st.integers(0, flat.numel() - 1))
        if layout == "2:4":
            flat[i] = draw(st.integers(0, 255))
        else:
            flat[i] = draw(st.sampled_from([-1, -32768 if indices.dtype == torch.int16 else -2**31,
                                            M, K, 32767]))
    elif damage == "offsets" and offsets.numel() > 1:
        perm = torch.randperm(offsets.numel(), generator=g)
        offsets = offsets[perm].contiguous()
    elif damage == "cut" and offsets.numel() > 1:
        offsets = offsets[:-1].contiguous()
    elif damage == "dtype":
        if draw(st.booleans()):
            indices = indices.to(torch.int64)
        else:
            values = values.double()
    return layout, (values, indices, offsets), M, K


@st.composite
def dense(draw, rows, N):
    kind = draw(st.sampled_from(["contig", "transposed", "sliced", "expand_rows",
                                 "expand_cols", "expand_all", "wrong_rows"]))
    if kind == "wrong_rows" and rows < 2**31:
        rows = rows + draw(st.sampled_from([-1, 1])) if rows > 0 else 1
    if rows > 2**20 and kind not in ("expand_rows", "expand_all"):
        kind = "expand_all"
    if rows * max(N, 1) >= 2**63:  # torch cannot even describe such a tensor
        N = 1
    if kind == "contig":
        return torch.randn(rows, N)
    if kind == "transposed":
        return torch.randn(N, rows).t()
    if kind == "sliced":
        return torch.randn(rows, 2 * N)[:, ::2]
    if kind == "expand_rows":
        return torch.randn(1, N).expand(rows, N)
    if kind == "expand_cols":
        return torch.randn(rows, 1).expand(rows, N)
    return torch.randn(1, 1).expand(rows, N)


def _run(fn):
    try:
        return fn(), None
    except ERRORS as e:
        return None, e


def _check_agree(call):
    out, err = _run(call)
    with use_backend("reference"):
        ref, ref_err = _run(call)
    if ref_err is not None:
        assert err is not None, f"reference rejected ({ref_err}) but the default backend returned"
        return
    assert err is None, f"default backend rejected what the reference serves: {err}"
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out.double(), ref.double(), rtol=1e-4, atol=1e-4, equal_nan=True)


SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(data=st.data())
def test_fuzz_spmm(data):
    layout, (v, i, o), M, K = data.draw(format_tensors())
    N = data.draw(st.integers(0, 9))
    B = data.draw(dense(K, N))
    _check_agree(lambda: torch.ops.sparsekern.spmm(v, i, o, M, K, layout, B, None))


@SETTINGS
@given(data=st.data())
def test_fuzz_backward_ops(data):
    layout, (v, i, o), M, K = data.draw(format_tensors())
    N = data.draw(st.integers(0, 9))
    G = data.draw(dense(M, N))
    if data.draw(st.booleans()):
        _check_agree(lambda: torch.ops.sparsekern.spmm_transposed(v, i, o, M, K, layout, G))
    else:
        B = data.draw(dense(K, N))
        _check_agree(lambda: torch.ops.sparsekern.spmm_sampled_dot(v, i, o, M, K, layout, G, B))


def test_fuzz_formats_are_built_or_rejected():
    # from_parts runs the full structure check: a damaged format never reaches an op there.
    with pytest.raises(ValueError, match=r"csc row indices\[0\]=-1 is out of range"):
        formats.from_parts("csc", torch.ones(1), torch.tensor([-1], dtype=torch.int16),
                           torch.tensor([0, 1], dtype=torch.int32), (4, 1))
