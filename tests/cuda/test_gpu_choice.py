"""The GPU dispatcher's choice logic on the CPU, with fake timers (no timing asserts).

On the CPU the cuda backend is unavailable and the Triton interpreter plays "our kernel";
``dense`` runs for real and torch's 2:4 raises (CPU tensors), so every path of
gpu_choice (measure, exclude, cache, static fallback, run-time fallback, non-finite B) runs
here with real arithmetic and a fake clock.
"""
import pytest
import torch

import sparsekern as sk
from sparsekern.backends import gpu_choice
from sparsekern.backends import triton as triton_backend
from tests.helpers import random_pattern_weight, rel_err

pytestmark = pytest.mark.usefixtures("clean_choices")


@pytest.fixture
def clean_choices(monkeypatch):
    ok, why = triton_backend.available()
    if not ok:
        pytest.skip(f"triton backend unavailable: {why}")
    monkeypatch.setenv(gpu_choice.MEASURE_ENV, "1")
    gpu_choice.forget_measurements()
    yield
    gpu_choice.forget_measurements()


class FakeTimer:
    """timer(name, fn) -> the given ms per candidate; runs fn once, counts the calls."""

    def __init__(self, ms):
        self.ms, self.calls = ms, []

    def __call__(self, name, fn):
        fn()
        self.calls.append(name)
        return self.ms.get(name, 100.0)


def problem(layout="2:4", M=24, K=40, N=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = random_pattern_weight(M, K, layout, density=0.5, blocksize=(8, 8), generator=g)
    A = sk.to_sparse(W.to(dtype), layout, blocksize=(8, 8)) if layout == "bsr" \
        else sk.to_sparse(W.to(dtype), layout)
    B = torch.randn(K, N, generator=g).to(dtype)
    return W.to(dtype), A, B


def dispatch(A, B, bias=None, timer=None, monkeypatch=None):
    values, indices, offsets, M, K, layout = A.op_args()
    out = torch.full((M, B.shape[1]), float("nan"), dtype=B.dtype)
    if timer is not None:
        real_measure = gpu_choice.measure
        monkeypatch.setattr(gpu_choice, "measure",
                            lambda *a, **k: real_measure(*a[:9], timer=timer))
    return gpu_choice.dispatch(values, indices, offsets, M, K, layout, B, bias, out)


def ref(W, B, bias=None):
    out = W.double() @ B.double()
    return out if bias is None else out + bias.double()[:, None]


@pytest.mark.parametrize("fastest", ["dense", "triton"])
@pytest.mark.parametrize("layout", ["2:4", "bsr", "csc"])
def test_fastest_candidate_is_measured_once_and_cached(layout, fastest, monkeypatch):
    W, A, B = problem(layout)
    bias = torch.randn(W.shape[0])
    timer = FakeTimer({fastest: 1.0})
    out = dispatch(A, B, bias, timer, monkeypatch)
    assert rel_err(out, ref(W, B, bias)) < 1e-5
    assert sorted(timer.calls) == ["dense", "triton"]  # cuda: unavailable; torch24: raises
    assert list(gpu_choice.cached_choices().values()) == [fastest]
    # Same shape, new B: served from the cache (the cache holds the choice, not results).
    B2 = torch.randn_like(B)
    out2 = dispatch(A, B2, None, timer, monkeypatch)
    assert len(timer.calls) == 2 and rel_err(out2, ref(W, B2)) < 1e-5
    # Another N bucket is measured anew.
    dispatch(A, torch.randn(W.shape[1], 40), None, timer, monkeypatch)
    assert len(timer.calls) == 4 and len(gpu_choice.cached_choices()) == 2


def test_a_wrong_candidate_is_never_chosen(monkeypatch):
    W, A, B = problem("csc")
    monkeypatch.setattr(triton_backend, "own_spmm", lambda *a: a[-1].fill_(1.0))
    values, indices, offsets, M, K, layout = A.op_args()
    m = gpu_choice.measure(values, indices, offsets, M, K, layout, B, None,
                           torch.empty(M, B.shape[1]), timer=FakeTimer({"triton": 0.1}))
    assert m.choice == "dense" and "differs from cuBLAS" in m.excluded["triton"]
    assert set(m.times) == {"dense"}
    assert "unavailable" in m.excluded["cuda"]


def test_torch24_that_cannot_serve_is_excluded():
    W, A, B = problem("2:4", dtype=torch.float16)
    values, indices, offsets, M, K, layout = A.op_args()
    m = gpu_choice.measure(values, indices, offsets, M, K, layout, B, None,
                           torch.empty(M, B.shape[1], dtype=B.dtype),
                           timer=FakeTimer({"torch24": 0.01}))
    assert "torch24" in m.excluded and m.choice in ("dense", "triton")


def test_measuring_off_serves_our_kernel_and_caches_nothing(monkeypatch):
    monkeypatch.setenv(gpu_choice.MEASURE_ENV, "0")
    W, A, B = problem("bsr")
    timer = FakeTimer({"dense": 0.1})
    out = dispatch(A, B, None, timer, monkeypatch)
    assert timer.calls == [] and gpu_choice.cached_choices() == {}
    assert rel_err(out, ref(W, B)) < 1e-5
    values, indices, offsets, M, K, layout = A.op_args()
    assert gpu_choice.choose(values, indices, offsets, M, K, layout, B, None, out) == "triton"


def test_dense_choice_keeps_nonfinite_b_away_from_pruned_entries(monkeypatch):
    W, _, B = problem("csc", M=12, K=16, N=2)
    W[:, 0] = 0  # column 0 pruned in every row
    A = sk.to_sparse(W, "csc")
    dispatch(A, B, None, FakeTimer({"dense": 0.1}), monkeypatch)
    assert list(gpu_choice.cached_choices().values()) == ["dense"]
    B = torch.randn(16, 2)
    B[0, 0] = float("nan")
    out = dispatch(A, B, None, None, monkeypatch)
    # Dense arithmetic would give NaN in every row (0 * NaN); only stored entries may meet B.
    assert out.isfinite().all()
    assert rel_err(out, ref(W, torch.nan_to_num(B, nan=0.0))) < 1e-5


def test_an_alternative_failing_at_run_time_falls_back_to_our_kernel(monkeypatch):
    W, A, B = problem("2:4", dtype=torch.float16)
    values, indices, offsets, M, K, layout = A.op_args()
    key = gpu_choice.choice_key(layout, M, K, B.shape[1], B.dtype, B.device)
    gpu_choice._choices[key] = "torch24"  # as if measured on a GPU; raises on CPU tensors
    out = dispatch(A, B, None, None, monkeypatch)
    assert rel_err(out, ref(W, B)) < 1e-2


def test_bad_indices_raise_before_any_candidate(monkeypatch):
    W, A, B = problem("csc")
    values, indices, offsets, M, K, layout = A.op_args()
    bad = indices.clone()
    bad[0] = M + 5
    with pytest.raises(ValueError, match="indices"):
        gpu_choice.dispatch(values, bad, offsets, M, K, layout, B, None,
                            torch.empty(M, B.shape[1]))
    assert gpu_choice.cached_choices() == {}


def test_choice_key_separates_what_changes_speed():
    key = gpu_choice.choice_key
    base = key("2:4", 64, 64, 8, torch.float16, torch.device("cpu"))
    assert base != key("2:4", 64, 64, 8, torch.bfloat16, torch.device("cpu"))
    assert base != key("2:4", 64, 64, 9, torch.float16, torch.device("cpu"))
    assert base != key("2:4", 64, 64, 8, torch.float16, torch.device("cuda", 1))
    assert key("2:4", 64, 64, 17, torch.float16, "cpu") == key("2:4", 64, 64, 32, torch.float16,
                                                               "cpu")
    assert [gpu_choice.n_bucket(n) for n in (1, 16, 17, 33, 4096)] == [1, 16, 32, 64, 4096]
    sparse = gpu_choice.weight_class("csc", torch.empty(10), 10, 10)
    denser = gpu_choice.weight_class("csc", torch.empty(50), 10, 10)
    assert sparse != denser
    assert gpu_choice.weight_class("bsr", torch.empty(3, 8, 4), 64, 64)[:2] == (8, 4)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # interpreter
def test_nonfinite_b_on_the_first_call_is_not_measured(monkeypatch):
    W, A, B = problem("bsr")
    B[0, 0] = float("inf")
    timer = FakeTimer({"dense": 0.1})
    dispatch(A, B, None, timer, monkeypatch)
    assert timer.calls == [] and gpu_choice.cached_choices() == {}
