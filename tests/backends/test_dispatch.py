"""Backend choice: defaults per device, use_backend, SPARSEKERN_BACKEND, threads."""
import concurrent.futures as cf

import pytest
import torch

import sparsekern as sk
from sparsekern import backends
from tests.helpers import TOL, dense_ref, random_pattern_weight, rel_err


def test_cpu_default_order():
    assert backends.default_order("csc", torch.device("cpu")) == ["cpu", "reference"]
    assert backends.default_order("csc", torch.device("meta")) == ["reference"]


def test_use_backend_forces_and_restores():
    W = random_pattern_weight(8, 8, "csc")
    A = sk.to_sparse(W, layout="csc")
    calls = []
    real = backends.reference.spmm

    def spy(*args):
        calls.append(1)
        return real(*args)

    backends.reference.spmm = spy
    try:
        with sk.use_backend("reference"):
            out = sk.spmm(A, torch.randn(8, 2))
            assert backends.forced_backend() == "reference"
        assert calls, "the forced backend was not called"
        assert backends.forced_backend() is None
    finally:
        backends.reference.spmm = real
    assert out.shape == (8, 2)


def test_unknown_backend_name():
    with pytest.raises(ValueError, match=r"backend must be one of 'reference', 'cpu', 'triton', "
                                         r"'cuda'; got 'fast'"):
        with sk.use_backend("fast"):
            pass


def test_env_variable(monkeypatch):
    try:
        monkeypatch.setenv("SPARSEKERN_BACKEND", "reference")
        assert backends.forced_backend() is None  # read at import and on reload_env() only
        backends.reload_env()
        assert backends.forced_backend() == "reference"
        W = random_pattern_weight(8, 8, "2:4")
        B = torch.randn(8, 3)
        assert rel_err(sk.spmm(sk.to_sparse(W, "2:4"), B), dense_ref(W, B)) < TOL[torch.float32]
        monkeypatch.setenv("SPARSEKERN_BACKEND", "nope")
        backends.reload_env()
        with pytest.raises(ValueError, match=r"SPARSEKERN_BACKEND='nope' is not a backend"):
            backends.forced_backend()
    finally:
        monkeypatch.delenv("SPARSEKERN_BACKEND")
        backends.reload_env()
    assert backends.forced_backend() is None


def test_forced_backend_that_cannot_serve_raises():
    A = sk.to_sparse(random_pattern_weight(8, 8, "csc"), layout="csc")
    with sk.use_backend("cuda"):
        with pytest.raises(RuntimeError, match=r"backend 'cuda' was forced but is not available|"
                                               r"backend 'cuda' does not support"):
            sk.spmm(A, torch.randn(8, 2))


def test_use_backend_is_per_thread():
    A = sk.to_sparse(random_pattern_weight(16, 16, "csc"), layout="csc")
    B = torch.randn(16, 4)

    def other_thread():
        return backends.forced_backend()

    with sk.use_backend("reference"):
        with cf.ThreadPoolExecutor(1) as pool:
            assert pool.submit(other_thread).result() is None
        out = sk.spmm(A, B)
    assert rel_err(out, sk.spmm(A, B)) < TOL[torch.float32]


def test_threads_calling_at_once_get_correct_results():
    cases = []
    for i, layout in enumerate(["csc", "2:4", "bsr"] * 4):
        W = random_pattern_weight(40 + i, 48, layout, blocksize=(4, 4))
        cases.append((W, sk.to_sparse(W, layout=layout, blocksize=(4, 4) if layout == "bsr"
                                      else None), torch.randn(48, 3 + i)))

    def work(case):
        W, A, B = case
        return rel_err(sk.spmm(A, B), dense_ref(W, B))

    with cf.ThreadPoolExecutor(4) as pool:
        errs = list(pool.map(work, cases * 3))
    assert max(errs) < TOL[torch.float32]
