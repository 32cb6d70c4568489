"""The Triton kernels on CUDA at realistic sizes (every test carries @pytest.mark.gpu).

The same edge cases as the interpreter tests, plus what only a GPU shows: bfloat16, TF32
float32, every decode autotune configuration, torch.library.opcheck and torch.compile of
the private ops, the measured dispatch order and the self-timing script. Autotuning is off
by default here (first configuration of each list) to keep the GPU check short;
test_every_decode_config_is_correct runs the other configurations.
"""
import pytest
import torch
import triton

import sparsekern as sk
from sparsekern.backends import gpu_choice, use_backend
from sparsekern.triton import build_row_strips, configs
from tests.helpers import dense_ref, random_pattern_weight, rel_err
from tests.triton.launch import launch_into
from tests.triton.tolerance import tolerance

pytestmark = pytest.mark.gpu
DEV = "cuda"


@pytest.fixture(autouse=True)
def no_autotune(monkeypatch):
    monkeypatch.setenv(configs.AUTOTUNE_ENV, "0")


def make_b(K, N, kind, dtype):
    if kind == "row":
        return torch.randn(K, N, device=DEV).to(dtype)
    if kind == "x_t":
        return torch.randn(N, K, device=DEV).to(dtype).t()
    if kind == "strided":
        return torch.randn(K, 2 * N, device=DEV).to(dtype)[:, ::2]
    raise ValueError(kind)


def pack(W, layout, blocksize=(64, 64)):
    return sk.to_sparse(W, layout, blocksize=blocksize) if layout == "bsr" \
        else sk.to_sparse(W, layout)


def run(A, B, bias=None):
    with use_backend("triton"):
        return torch.ops.sparsekern.spmm(*A.op_args(), B, bias)


SHAPES = [(4096, 4096, 1), (4096, 4096, 16), (11008, 4096, 8), (1024, 2048, 300),
          (1000, 3000, 37), (5, 7, 3), (70, 129, 1)]


@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_matches_dense(layout, dtype, M, K, N, poison_output):
    density = 0.5 if layout == "2:4" else 0.1
    W = random_pattern_weight(M, K, layout, density=density, blocksize=(64, 64)).to(DEV, dtype)
    A = pack(W, layout)
    B = make_b(K, N, "x_t" if N > 1 else "row", dtype)
    bias = torch.randn(M, device=DEV).to(dtype)
    out = run(A, B, bias)
    assert out.shape == (M, N) and out.dtype == dtype
    assert rel_err(out, dense_ref(W, B, bias)) < tolerance(dtype, K, tf32=True)


@pytest.mark.parametrize("kind", ["row", "x_t", "strided"])
@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_b_strides(layout, kind, poison_output):
    M, K, N = 777, 1030, 19
    W = random_pattern_weight(M, K, layout, density=0.3, blocksize=(32, 32)).to(DEV).half()
    A = pack(W, layout, (32, 32))
    B = make_b(K, N, kind, torch.float16)
    assert rel_err(run(A, B), dense_ref(W, B)) < tolerance(torch.float16, 0, tf32=True)


BLOCKS = [(16, 16), (32, 32), (64, 64), (128, 128), (8, 1), (1, 8), (24, 40), (64, 16)]


@pytest.mark.parametrize("N", [1, 16, 256])
@pytest.mark.parametrize("blocksize", BLOCKS, ids=[f"{b[0]}x{b[1]}" for b in BLOCKS])
def test_bsr_block_shapes(blocksize, N, poison_output):
    M, K = 1030, 2050
    W = random_pattern_weight(M, K, "bsr", density=0.2, blocksize=blocksize).to(DEV).half()
    A = pack(W, "bsr", blocksize)
    B = make_b(K, N, "x_t" if N > 1 else "row", torch.float16)
    assert rel_err(run(A, B), dense_ref(W, B)) < tolerance(torch.float16, 0, tf32=True)


@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_empty_and_density_edges(layout, poison_output):
    for (M, K, N), density in [((0, 64, 4), 0.3), ((64, 0, 4), 0.3), ((64, 64, 0), 0.3),
                               ((64, 64, 4), 0.0), ((64, 64, 4), 1.0)]:
        W = random_pattern_weight(M, K, layout, density=density, blocksize=(16, 16))
        W = W.to(DEV).half()
        A = pack(W, layout, (16, 16))
        B = make_b(K, N, "row", torch.float16)
        bias = torch.randn(M, device=DEV).half()
        out = run(A, B, bias)
        assert out.shape == (M, N)
        if out.numel():
            assert rel_err(out, dense_ref(W, B, bias)) < tolerance(torch.float16, 0, tf32=True)


@pytest.mark.parametrize("split_k", [1, 3, 8])
@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_forced_split_k(layout, split_k):
    M, K, N = 512, 4096, 8
    W = random_pattern_weight(M, K, layout, density=0.1 if layout != "2:4" else 0.5,
                              blocksize=(64, 64)).to(DEV).half()
    A = pack(W, layout)
    B = make_b(K, N, "x_t", torch.float16)
    bias = torch.randn(M, device=DEV).half()
    out = torch.full((N, M), float("nan"), device=DEV, dtype=torch.float16).t()
    launch_into(A, layout, M, K, B, bias, out, split_k)
    assert rel_err(out, dense_ref(W, B, bias)) < tolerance(torch.float16, 0, tf32=True)


@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_nan_inf_in_b(layout):
    M, K, N = 300, 520, 8
    W = random_pattern_weight(M, K, layout, density=0.3, blocksize=(16, 16)).to(DEV).half()
    A = pack(W, layout, (16, 16))
    B = make_b(K, N, "row", torch.float16)
    B[7, 0], B[100, 1], B[101, 1], B[300:, 5] = float("nan"), float("inf"), float("-inf"), \
        float("inf")
    out = run(A, B).double()
    with use_backend("reference"):
        ref = torch.ops.sparsekern.spmm(*A.to(torch.float64).op_args(), B.double()).half()
    ref = ref.double()
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
    finite = ref.isfinite()
    assert rel_err(out[finite], ref[finite]) < tolerance(torch.float16, 0, tf32=True)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_every_decode_config_is_correct(layout, monkeypatch):
    """Each configuration the decode autotuner may pick computes the right answer."""
    from sparsekern.triton import bsr as bsr_mod, csc as csc_mod, semi24 as semi24_mod
    mod, kname, kern = {"bsr": (bsr_mod, "bsr", bsr_mod.bsr_spmm_kernel),
                        "2:4": (semi24_mod, "semi24", semi24_mod.semi24_spmm_kernel),
                        "csc": (csc_mod, "csc", csc_mod.csc_spmm_kernel)}[layout]
    M, K, N = 2048, 4096, 5
    W = random_pattern_weight(M, K, layout, density=0.1 if layout != "2:4" else 0.5,
                              blocksize=(64, 64)).to(DEV).half()
    A = pack(W, layout)
    B = make_b(K, N, "x_t", torch.float16)
    for cfg in configs.kernel_configs(kname, "decode", 64, 64):
        tuner = triton.autotune(configs=[cfg], key=["n_class"])(kern)
        monkeypatch.setattr(mod, "autotuned", lambda *a, _t=tuner, **k: _t)
        assert rel_err(run(A, B), dense_ref(W, B)) < tolerance(torch.float16, 0, tf32=True), str(cfg)


@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_private_ops_pass_opcheck(layout):
    M, K, N = 128, 256, 4
    W = random_pattern_weight(M, K, layout, density=0.3, blocksize=(32, 32)).to(DEV).half()
    A = pack(W, layout, (32, 32))
    B = make_b(K, N, "row", torch.float16)
    out = torch.empty(M, N, device=DEV, dtype=torch.float16)
    values, indices, offsets, *_ = A.op_args()
    if layout == "bsr":
        op, args = torch.ops.sparsekern._triton_bsr.default, (values, indices, offsets, M, K, B,
                                                              None, out)
    elif layout == "2:4":
        op, args = torch.ops.sparsekern._triton_semi24.default, (values, indices, M, K, B, None,
                                                                 out)
    else:
        s = build_row_strips(values, indices, offsets, M, K)
        op, args = torch.ops.sparsekern._triton_csc.default, (s.values, s.cols, s.rows, s.ptr,
                                                              M, K, B, None, out)
    torch.library.opcheck(op, args)


def test_private_op_compiles_fullgraph():
    M, K, N = 256, 512, 16
    W = random_pattern_weight(M, K, "bsr", density=0.3, blocksize=(32, 32)).to(DEV).half()
    A = pack(W, "bsr", (32, 32))
    values, indices, offsets, *_ = A.op_args()

    def f(x):
        out = torch.empty(M, x.shape[0], device=DEV, dtype=x.dtype)
        torch.ops.sparsekern._triton_bsr(values, indices, offsets, M, K, x.t(), None, out)
        return torch.relu(out)

    x = torch.randn(N, K, device=DEV).half()
    got = torch.compile(f, fullgraph=True)(x)
    assert rel_err(got, torch.relu(dense_ref(W, x.t()))) < tolerance(torch.float16, 0, tf32=True)


@pytest.mark.parametrize("layout,M,K,N", [("bsr", 1024, 1024, 8), ("2:4", 4096, 4096, 8),
                                          ("2:4", 4096, 4096, 64), ("csc", 4096, 4096, 1)])
def test_measured_dispatch_is_correct_and_cached(layout, M, K, N, monkeypatch):
    """The default CUDA path measures every candidate once and serves the fastest correct one."""
    monkeypatch.setenv(gpu_choice.MEASURE_ENV, "1")
    gpu_choice.forget_measurements()
    W = random_pattern_weight(M, K, layout, density=0.5 if layout == "2:4" else 0.1,
                              blocksize=(64, 64)).to(DEV, torch.float16)
    A = pack(W, layout)
    x = torch.randn(N, K, device=DEV, dtype=torch.float16)
    y = sk.linear(x, A)
    assert rel_err(y, dense_ref(W, x.t()).t()) < 1e-2
    choices = gpu_choice.cached_choices()
    assert len(choices) == 1 and next(iter(choices.values())) in gpu_choice.CANDIDATES[layout]
    y2 = sk.linear(torch.randn(N, K, device=DEV, dtype=torch.float16), A)
    assert gpu_choice.cached_choices() == choices and y2.isfinite().all()
    gpu_choice.forget_measurements()


def test_selftime_runs_one_case():
    from sparsekern.bench.triton_selftime import format_table, time_triton_kernels
    rows = time_triton_kernels(cases=[("bsr", 4096, 4096, 16)])
    assert "error" not in rows[0], rows[0]
    assert rows[0]["rel_err"] < 1e-2 and rows[0]["triton_ms"] > 0
    assert "bsr" in format_table(rows)
