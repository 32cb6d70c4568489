"""The SELL-16x64 layout (sparsekern/formats/sell.py, csrc/cpu/sell.cpp): packing, the op on
every ISA this machine has and every backend, rejections, gradients, and the user paths."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.formats import SELL, layouts
from sparsekern.formats.sell import as_csc
from tests.helpers import dense_ref, random_pattern_weight, rel_err

HAVE_C = sk._extension._C is not None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _w(M, K, density=0.2, seed=0, dtype=torch.float32):
    return random_pattern_weight(M, K, "csc", density=density, dtype=dtype,
                                 generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("M,K", [(1, 1), (5, 13), (16, 64), (17, 65), (0, 8), (4, 0),
                                 (33, 130), (40, 200)])
def test_packs_and_unpacks_exactly(M, K):
    W = _w(M, K, seed=M + K)
    A = sk.to_sparse(W, layout="sell")
    assert isinstance(A, SELL) and A.layout == "sell"
    assert A.values.shape == (int((W != 0).sum()),) and A.indices.dtype == torch.uint8
    assert A.indices.shape[1] == 16 and A.offsets.shape == (-(-M // 16) * -(-K // 64) + 1, 2)
    assert torch.equal(A.to_dense(), W)
    assert int((A.indices != 255).sum()) == A.nnz
    G = A.offsets.shape[0] - 1
    assert A.nbytes == A.nnz * 4 + A.indices.numel() + (G + 1) * 2 * 4
    B = sk.formats.from_parts("sell", A.values, A.indices, A.offsets, (M, K))  # validates
    assert torch.equal(B.to_dense(), W)


def test_steps_are_the_fullest_lane_of_each_slice_and_block():
    W = torch.zeros(20, 70)
    W[3, [1, 5, 9]] = 1.0    # slice 0, block 0: 3 entries in one row
    W[4, 2] = 2.0            # slice 0, block 0: 1 entry
    W[17, 66] = 3.0          # slice 1, block 1 (the last, 6 columns wide)
    A = sk.to_sparse(W, layout="sell")
    assert A.offsets.tolist() == [[0, 0], [3, 4], [3, 4], [3, 4], [4, 5]]
    assert A.indices[0, 3] == 1 and A.indices[1, 3] == 5 and A.indices[2, 3] == 9
    assert A.indices[0, 4] == 2 and (A.indices[1:3, 4] == 255).all()
    assert A.indices[3, 1] == 2
    # values follow the lanes with an entry: step 0 (rows 3, 4), step 1, step 2, step 3
    assert A.values.tolist() == [1.0, 2.0, 1.0, 1.0, 3.0]


def test_bytes_model_is_near_a_random_patterns_real_bytes():
    lay = layouts.get("sell")
    for M, K, d in [(4096, 4096, 0.1), (1536, 384, 0.1), (3072, 768, 0.3), (384, 1536, 0.05)]:
        A = sk.to_sparse(_w(M, K, density=d, seed=M + K), layout="sell")
        assert abs(lay.nbytes(M, K, A.nnz, 4, None) / A.nbytes - 1) < 0.08, (M, K, d)


def _op_cases():
    for M, K in [(1, 1), (7, 13), (16, 64), (17, 65), (33, 130), (130, 300), (300, 700)]:
        for N in (1, 2, 5, 17):  # 17: B in three chunks of at most 8 columns
            yield M, K, N


@pytest.mark.parametrize("backend", ["reference", "cpu", None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,K,N", list(_op_cases()))
def test_spmm_matches_dense(backend, dtype, M, K, N):
    if backend == "cpu" and not HAVE_C:
        pytest.skip("the compiled CPU kernels are not built")
    gen = torch.Generator().manual_seed(M * K + N)
    W = _w(M, K, density=0.15, seed=M * 3 + K, dtype=dtype)
    B, bias = torch.randn(K, N, generator=gen), torch.randn(M, generator=gen)
    A = sk.to_sparse(W, layout="sell")
    if backend is None:  # the C++ fast path (own kernel) with bias
        out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
    else:
        with sk.use_backend(backend):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
    assert rel_err(out, dense_ref(W.float(), B, bias)) < 1e-5
    # B column-major (a Linear's x.T) and a strided column: the same answer
    Bt = B.t().contiguous().t()
    torch.testing.assert_close(torch.ops.sparsekern.spmm(*A.op_args(), Bt, bias), out,
                               rtol=1e-5, atol=1e-5)


def test_padding_lanes_never_meet_an_infinite_activation():
    """A padding lane holds value 0 and index 255: it must add nothing (0 * Inf is NaN), as in
    the reference, which walks stored entries only."""
    W = torch.zeros(16, 64)
    W[0, 5] = 1.0
    W[1, 0] = 2.0
    A = sk.to_sparse(W, layout="sell")
    x = torch.zeros(64, 2)
    x[0] = float("inf")
    y = sk.spmm(A, x)
    with sk.use_backend("reference"):
        ref = sk.spmm(A, x)
    torch.testing.assert_close(y, ref)
    assert torch.isinf(y[1]).all() and torch.isfinite(y[[0] + list(range(2, 16))]).all()


@pytest.mark.skipif(not HAVE_C, reason="the compiled CPU kernels are not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_values_read_ahead_never_reach_the_sum(dtype, cpu_isa_env):
    """The AVX-512 step loads 16 values at once while 16 remain in the stream and expands the
    first cnt into its lanes: the ones after them (later steps' values, here Inf and NaN) must
    add nothing, and at the stream's end nothing past the values is read (a view of a longer
    buffer whose tail is NaN). Every ISA the machine has."""
    g = torch.Generator().manual_seed(3)
    W = _w(70, 300, density=0.15, seed=4)
    rows, cols = W.nonzero(as_tuple=True)
    pick = torch.randperm(rows.numel(), generator=g)[:6]
    W[rows[pick[:3]], cols[pick[:3]]] = float("inf")
    W[rows[pick[3:]], cols[pick[3:]]] = float("nan")
    A = sk.to_sparse(W.to(dtype), layout="sell")
    v, i, o = A.op_args()[:3]
    buf = torch.full((v.numel() + 40,), float("nan"), dtype=dtype)
    buf[:v.numel()] = v
    tail_view = buf[:v.numel()]  # the memory after its last value holds NaN
    x = torch.randn(300, 1, generator=g).to(dtype)
    with sk.use_backend("reference"):
        ref = torch.ops.sparsekern.spmm(v, i, o, 70, 300, "sell", x, None)
    have = torch.ops.sparsekern._cpu_isa()
    order = ["portable", "avx2", "avx512"]
    for isa in order[:order.index(have) + 1] if have in order else ["portable"]:
        cpu_isa_env(isa)
        for vals in (v, tail_view):
            y = torch.ops.sparsekern.spmm(vals, i, o, 70, 300, "sell", x, None)
            assert torch.equal(y.isnan(), ref.isnan()), isa
            assert torch.equal(y.isinf(), ref.isinf()), isa
            fin = ref.isfinite()
            torch.testing.assert_close(y[fin].float(), ref[fin].float(), rtol=2e-2, atol=2e-2)
    assert ref.isnan().any() and ref.isfinite().any()  # the case means something


@pytest.mark.parametrize("bad,match", [
    (dict(values=torch.zeros(2, 8)), r"sell values has shape \[2, 8\]; expected \[nnz\]"),
    (dict(indices=torch.zeros(2, 16, dtype=torch.int32)),
     r"sell indices has dtype torch.int32; expected torch.uint8"),
    (dict(indices=torch.zeros(3, 8, dtype=torch.uint8)),
     r"sell indices has shape \[3, 8\]; expected \[steps, 16\]"),
    (dict(offsets=torch.zeros(3, dtype=torch.int32)),
     r"sell offsets has shape \[3\] and dtype torch.int32; expected int32 or int64 of shape "
     r"\[ceil\(M/16\) \* ceil\(K/64\) \+ 1, 2\] = \[3, 2\] for M=20, K=50"),
])
def test_bad_tensors_are_named(bad, match):
    t = dict(values=torch.zeros(0), indices=torch.full((2, 16), 255, dtype=torch.uint8),
             offsets=torch.tensor([[0, 0], [1, 0], [2, 0]], dtype=torch.int32))
    t.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        sk.formats.from_parts("sell", t["values"], t["indices"], t["offsets"], (20, 50))
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.sparsekern.spmm(t["values"], t["indices"], t["offsets"], 20, 50, "sell",
                                  torch.zeros(50, 1))


def _corrupt(kind):
    """A valid 20 x 50 SELL weight with one thing broken, and the from_parts message."""
    W = torch.zeros(20, 50)
    W[0, 3] = W[2, 7] = W[17, 1] = 1.0
    A = sk.to_sparse(W, layout="sell")
    v, i, o = A.values.clone(), A.indices.clone(), A.offsets.clone()
    if kind == "width":  # block 0 is the last block: 50 columns wide
        i[0, 0] = 50
        msg = r"sell indices\[0, 0\]=50 is out of range for row 0, column block 0; expected 255"
    elif kind == "index 200":
        i[0, 5] = 200
        msg = r"sell indices\[0, 5\]=200 is out of range for row 5"
    elif kind == "row past M":  # slice 1 holds rows 16..31; M = 20
        i[1, 6] = 0
        msg = r"sell indices\[1, 6\]=0 is out of range for row 22, column block 0; .* in a row < M=20"
    elif kind == "one lane more":  # a lane without an entry gets one: no value left for it
        i[0, 5] = 3
        msg = r"sell offsets\[0:2, 1\] give group 0 2 values but its steps have 3 lanes"
    elif kind == "one value more":
        o[1, 1] += 1
        msg = r"sell offsets\[0:2, 1\] give group 0 3 values but its steps have 2 lanes"
    else:  # steps that decrease
        o[1, 0] = o[-1, 0] + 1
        msg = r"sell offsets\[:, 0\] must not decrease: offsets\[2, 0\]=2 < offsets\[1, 0\]=3"
    return v, i, o, msg


@pytest.mark.parametrize("kind", ["width", "index 200", "row past M", "one lane more",
                                  "one value more", "offsets"])
def test_every_bad_index_is_an_error_on_every_path(kind):
    v, i, o, msg = _corrupt(kind)
    with pytest.raises(ValueError, match=msg):
        sk.formats.from_parts("sell", v, i, o, (20, 50))
    for backend in (None, "reference", "cpu"):
        with pytest.raises((ValueError, RuntimeError), match=r"sell|out of range|offsets"):
            if backend is None:
                torch.ops.sparsekern.spmm(v, i, o, 20, 50, "sell", torch.randn(50, 2))
            else:
                with sk.use_backend(backend):
                    torch.ops.sparsekern.spmm(v, i, o, 20, 50, "sell", torch.randn(50, 2))


ISA_SCRIPT = r"""
import torch, sparsekern as sk
from tests.helpers import random_pattern_weight
g = torch.Generator().manual_seed(11)
print(torch.ops.sparsekern._cpu_isa())
for M, K, N in [(1, 1, 1), (17, 65, 1), (33, 130, 3), (300, 700, 1), (130, 300, 4)]:
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        W = random_pattern_weight(M, K, "csc", density=0.2, dtype=dt, generator=g)
        A = sk.to_sparse(W, layout="sell")
        B = torch.randn(K, N, generator=g)
        y = torch.ops.sparsekern.spmm(*A.op_args(), B)
        with sk.use_backend("reference"):
            r = torch.ops.sparsekern.spmm(*A.op_args(), B)
        err = float((y - r).abs().max()) / (1.0 + float(r.abs().max()))
        assert err < 1e-5, (M, K, N, dt, err)
v, i, o = A.values.clone(), A.indices.clone(), A.offsets.clone()
r = (i != 255).nonzero()[0]
i[r[0], r[1]] = 99  # an entry's column out of range: its lane also loses its value
try:
    torch.ops.sparsekern.spmm(v, i, o, 130, 300, "sell", torch.randn(300, 1))
except ValueError as e:
    assert f"sell indices[{int(r[0])}, {int(r[1])}]=99 is out of range" in str(e), e
else:
    raise AssertionError("no error")
print("ok")
"""


def _isas():
    if not HAVE_C:
        return []
    have = torch.ops.sparsekern._cpu_isa()
    order = ["portable", "avx2", "avx512"]
    return order[:order.index(have) + 1] if have in order else ["portable"]


@pytest.mark.parametrize("isa", _isas())
def test_every_isa_this_machine_has_matches_the_reference(isa):
    env = dict(os.environ, SPARSEKERN_CPU_ISA=isa, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-c", ISA_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [isa, "ok"]


@pytest.mark.skipif(not HAVE_C, reason="the compiled CPU kernels are not built")
def test_threads_give_the_same_answer():
    W = _w(700, 900, density=0.1, seed=5)
    A = sk.to_sparse(W, layout="sell")
    B = torch.randn(900, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sk.spmm(A, B)
        torch.set_num_threads(2)
        two = sk.spmm(A, B)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)  # each slice's sums are formed in one order on any thread


def test_the_python_path_runs_the_csc_kernels_on_a_cached_copy():
    A = sk.to_sparse(_w(20, 70, seed=2), layout="sell")
    first = as_csc(A.values, A.indices, A.offsets, 20, 70)
    assert as_csc(A.values, A.indices, A.offsets, 20, 70) is first  # built once
    assert torch.equal(sk.formats.from_parts("csc", *first, (20, 70)).to_dense(), A.to_dense())
    with torch.no_grad():
        A.values.mul_(2)  # a changed weight drops the copy: never a stale answer
    again = as_csc(A.values, A.indices, A.offsets, 20, 70)
    assert again is not first and torch.equal(again[0], 2 * first[0])


@pytest.mark.parametrize("N", [1, 6])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gradients_match_dense(backend, N):
    if backend == "cpu" and not HAVE_C:
        pytest.skip("the compiled CPU kernels are not built")
    W = _w(20, 70, density=0.3, seed=4)
    lin = nn.Linear(70, 20)
    with torch.no_grad():
        lin.weight.copy_(W)
    sl = sk.SparseLinear.from_dense(lin, layout="sell")
    x = torch.randn(N, 70, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    with sk.use_backend(backend):
        sl(x).square().sum().backward()
    lin(x2).square().sum().backward()
    assert rel_err(x.grad, x2.grad) < 1e-5
    gW = SELL(sl.values.grad, sl.indices, sl.offsets, (20, 70)).to_dense()
    mask = SELL(torch.ones_like(sl.values), sl.indices, sl.offsets, (20, 70)).to_dense()
    assert rel_err(gW, lin.weight.grad * mask) < 1e-5
    assert sl.values.grad.shape == sl.values.shape


def test_gradcheck_float64():
    W = _w(17, 66, density=0.2, seed=8, dtype=torch.float64)
    A = sk.to_sparse(W, layout="sell")
    v = A.values.clone().requires_grad_()
    B = torch.randn(66, 2, dtype=torch.float64, requires_grad=True)
    assert v.shape == (int((W != 0).sum()),)

    def f(v, B):
        return torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 17, 66, "sell", B)
    assert torch.autograd.gradcheck(f, (v, B))


def test_through_prune_convert_serialization_and_compile(tmp_path):
    model = nn.Sequential(nn.Linear(130, 64), nn.ReLU(), nn.Linear(64, 8))
    prune.prune_model(model, 0.9, granularity="fine")
    x = torch.randn(1, 130)
    ref = model(x)
    out = prune.convert(model, layout="sell")
    assert isinstance(out[0], sk.SparseLinear) and out[0].layout == "sell"
    torch.testing.assert_close(out(x), ref, rtol=1e-5, atol=1e-5)
    sk.save_sparse(out, tmp_path / "m.safetensors")
    fresh = nn.Sequential(nn.Linear(130, 64), nn.ReLU(), nn.Linear(64, 8))
    sk.load_sparse(fresh, tmp_path / "m.safetensors")
    assert fresh[0].layout == "sell"
    torch.testing.assert_close(fresh(x), ref, rtol=1e-5, atol=1e-5)
    compiled = torch.compile(fresh, fullgraph=True)
    torch.testing.assert_close(compiled(x), ref, rtol=1e-5, atol=1e-5)
    # auto picks sell when the table says it is fastest
    from sparsekern.auto.choose import synthetic_table
    m = nn.Sequential(nn.Linear(130, 64))
    with torch.no_grad():
        m[0].weight.copy_(layouts.get("sell").magnitude_prune(m[0].weight, 0.9, None))
    t = synthetic_table({"0": (1.0, {"sell": [(0.1, 0.2)], "csc": [(0.1, 0.4)]})})
    sk.sparsify(m, layout="auto", latency_table=t)
    assert isinstance(m[0], sk.SparseLinear) and m[0].layout == "sell"


def test_bench_case_runs_every_candidate():
    from sparsekern.bench import candidates, cases, operands
    case = cases.Case("sell", cases.SHAPES["minilm.attn"], 1, 0.9)
    W = operands.weight(case)
    cands = candidates.build_candidates(case, W)
    assert [c.name for c in cands] == candidates.candidate_names("sell", "cpu")
    x = torch.randn(1, W.shape[1])
    ref = x @ W.t()
    for c in cands:
        assert c.fn is not None, (c.name, c.reason)
        y = torch.as_tensor(c.fn(c.prepare(x)))
        y = y.t() if c.out_layout == "MN" else y
        assert rel_err(y, ref) < 1e-5, c.name


@pytest.mark.parametrize("write", ["load_state_dict", "copy_", "numpy", "data"])
def test_no_write_to_the_weights_leaves_a_stale_answer(write):
    """The fast path reads the live tensors; the autograd path's cached CSC copy is keyed by
    the bytes, so every way of writing new values (same pattern) is seen on both paths."""
    W = _w(40, 130, density=0.2, seed=9)
    lin = nn.Linear(130, 40)
    with torch.no_grad():
        lin.weight.copy_(W)
    sl = sk.SparseLinear.from_dense(lin, layout="sell")
    x = torch.randn(1, 130, requires_grad=True)
    sl(x).sum().backward()  # builds and caches the CSC copy
    new = torch.randn_like(sl.values)
    if write == "load_state_dict":
        sl.load_state_dict({**sl.state_dict(), "values": new})
    elif write == "copy_":
        with torch.no_grad():
            sl.values.copy_(new)
    elif write == "numpy":
        sl.values.detach().numpy()[:] = new.numpy()
    else:
        sl.values.data = new.clone()
    ref = SELL(new, sl.indices, sl.offsets, (40, 130)).to_dense()
    expect = x.detach() @ ref.t() + sl.bias.detach()
    x.grad = None
    y = sl(x)
    y.sum().backward()  # the backward products run the CSC kernels on the cached copy
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, ref.sum(0, keepdim=True), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(sl(x.detach()), expect, rtol=1e-5, atol=1e-5)  # fast path
    with torch.inference_mode():
        torch.testing.assert_close(sl(x.detach()), expect, rtol=1e-5, atol=1e-5)
