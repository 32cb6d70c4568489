"""The layout registry: every layout list derives from it, and an unknown layout is an error
naming the argument everywhere (never a fall-through to another layout)."""
import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.auto.formats import format_specs, parse_format
from sparsekern.auto.measure import Grid
from sparsekern.backends import reference, triton as triton_backend
from sparsekern.bench import cases, magnitude, smoke
from sparsekern.formats import layouts
from sparsekern.formats.validate import check_format_meta
from tests.helpers import random_pattern_weight

NAMES = layouts.names()
UNKNOWN = r"layout must be one of '.*'; got 'coo'"


def test_registry_lists_each_layout_once_with_its_format():
    assert set(NAMES) == {"1:4", "2:4", "bsr", "csc", "sell"}
    assert len(set(NAMES)) == len(NAMES)
    for lay in layouts.all_layouts():
        assert lay.format.layout == lay.name
        assert sk.formats.format_class(lay.name) is lay.format
    assert sk.formats.LAYOUTS == NAMES


def test_unknown_layout_names_the_argument():
    with pytest.raises(ValueError, match=r"layout must be one of '1:4', '2:4', 'bsr', 'csc', 'sell'; got 'coo'"):
        layouts.get("coo")
    with pytest.raises(ValueError, match=r"fmt must be one of .*; got None"):
        layouts.get(None, "fmt")


def test_registering_a_second_layout_under_a_name_is_refused():
    lay = layouts.get("csc")
    assert layouts.register(lay) is lay  # the same object again: a no-op
    twin = layouts.Layout(**{**lay.__dict__})
    with pytest.raises(ValueError, match=r"layout 'csc' is already registered"):
        layouts.register(twin)
    with pytest.raises(TypeError, match=r"layout must be a sparsekern.formats.layouts.Layout, "
                                        r"got str"):
        layouts.register("csc")


@pytest.mark.parametrize("call", [
    lambda: sk.to_sparse(torch.zeros(4, 4), layout="coo"),
    lambda: sk.formats.from_parts("coo", torch.zeros(1), torch.zeros(1), torch.zeros(1), (1, 1)),
    lambda: check_format_meta(torch.zeros(1), torch.zeros(1), torch.zeros(1), 1, 1, "coo"),
    lambda: reference.coordinates(torch.zeros(1), torch.zeros(1), torch.zeros(1), 1, 1, "coo"),
    lambda: magnitude.prune(torch.zeros(4, 4), "coo", 0.5),
    lambda: cases.Case("coo", cases.SHAPES["minilm.attn"], 1, 0.5),
    lambda: random_pattern_weight(4, 4, "coo"),
], ids=["to_sparse", "from_parts", "check_format_meta", "reference", "magnitude", "bench_case",
        "test_helper"])
def test_unknown_layout_is_rejected_everywhere(call):
    with pytest.raises(ValueError, match=UNKNOWN):
        call()


def test_unknown_layout_in_sparsify_and_convert():
    with pytest.raises(ValueError, match=r"layout must be 'auto', '1:4', '2:4', 'bsr', 'csc' or 'sell'; got 'coo'"):
        sk.sparsify(nn.Linear(4, 4), layout="coo")
    with pytest.raises(ValueError, match=r"layout must be 'auto', .* or 'sell'; got 'coo'"):
        prune.convert(nn.Linear(4, 4), layout="coo")


def test_unknown_layout_in_the_latency_table_and_the_triton_backend():
    with pytest.raises(ValueError, match=r"grid layouts must be among '1:4', '2:4', 'bsr', 'csc', 'sell'; "
                                         r"got \['coo'\]"):
        Grid(layouts=("2:4", "coo"))
    with pytest.raises(ValueError, match=r"unknown format 'coo'; expected '1:4', '2:4', 'csc', 'sell' or "
                                         r"'bsrBMxBK'"):
        parse_format("coo")
    assert not triton_backend.supports("coo", torch.float32, torch.float32, torch.device("cpu"))
    out = torch.empty(2, 1)
    with pytest.raises(ValueError, match=r"layout must be one of '1:4', '2:4', 'bsr', 'csc', 'sell'; "
                                         r"got 'coo'"):
        triton_backend.own_spmm(torch.ones(1), torch.zeros(1, dtype=torch.int32),
                                torch.zeros(2, dtype=torch.int32), 2, 1, "coo",
                                torch.ones(1, 1), None, out)


def test_derived_lists_cover_every_layout():
    assert {s.layout for s in format_specs()} == set(NAMES)
    assert set(Grid().layouts) == set(NAMES)
    assert {c.layout for c in cases.full_matrix()} == set(NAMES)
    assert {c.layout for c in cases.quick_matrix()} == set(NAMES)
    assert {c.layout for c in cases.suite_matrix()} == set(NAMES)
    assert {lay for lay, _, _ in smoke.LAYOUTS} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_layout_entry_agrees_with_its_format(name):
    """Pruning gives the pattern, packing keeps it, coordinates and bytes match the tensors."""
    lay = layouts.get(name)
    block = (4, 4) if lay.blocked else None
    gen = torch.Generator().manual_seed(3)
    W = lay.magnitude_prune(torch.randn(12, 22, generator=gen), 0.6, block)
    A = sk.to_sparse(W, layout=name, blocksize=block)
    assert torch.equal(A.to_dense(), W)
    stored = lay.pattern_density(W, block)
    row, col, pos = reference.coordinates(A.values, A.indices, A.offsets, 12, 22, name)
    if lay.fixed_density is not None:
        assert stored == lay.fixed_density
    elif not lay.blocked:  # csc, sell: the entries it stores (sell's padding lanes aside)
        assert stored == pytest.approx(row.numel() / W.numel())
    else:  # padded edge blocks count whole
        assert stored == pytest.approx(A.values.shape[0] / (3 * 6))
    if name == "sell":  # its padding lanes depend on the pattern: estimated for a random one
        assert lay.nbytes(12, 22, A.nnz, 4, block) == pytest.approx(A.nbytes, rel=0.3)
    else:
        assert lay.nbytes(12, 22, A.nnz, 4, block) == A.nbytes
    D = torch.zeros(12, 22)
    D[row, col] = A.values.reshape(-1)[pos]
    assert torch.equal(D, W)


# -- the layout added by following docs/adding-a-layout.md: 1:4 ---------------------------------

from sparsekern.formats import NM14  # noqa: E402
from sparsekern.formats.nm14 import as_semi24  # noqa: E402
from tests.helpers import dense_ref, rel_err  # noqa: E402


def _w14(M, K, seed=0, dtype=torch.float32):
    return random_pattern_weight(M, K, "1:4", generator=torch.Generator().manual_seed(seed),
                                 dtype=dtype)


@pytest.mark.parametrize("M,K", [(1, 1), (5, 13), (8, 16), (3, 17), (0, 8), (4, 0), (33, 70)])
def test_nm14_packs_and_unpacks_exactly(M, K):
    W = _w14(M, K)
    A = sk.to_sparse(W, layout="1:4")
    assert isinstance(A, NM14) and A.layout == "1:4"
    assert A.values.shape == (M, -(-K // 4)) and A.indices.shape == (M, -(-K // 16))
    assert torch.equal(A.to_dense(), W)
    assert A.nbytes == layouts.get("1:4").nbytes(M, K, A.nnz, 4, None)
    B = sk.formats.from_parts("1:4", A.values, A.indices, A.offsets, (M, K))  # validates
    assert torch.equal(B.to_dense(), W)


def test_nm14_rejects_a_weight_that_is_not_1_4():
    W = torch.zeros(2, 9)
    W[1, 4] = W[1, 6] = 1.0
    with pytest.raises(ValueError, match=r"W is not 1:4 sparse: row 1, group 1 \(columns 4..7\) "
                                         r"has 2 nonzeros"):
        sk.to_sparse(W, layout="1:4")
    with pytest.raises(ValueError, match=r"blocksize is only for layout='bsr'"):
        sk.to_sparse(torch.zeros(2, 4), layout="1:4", blocksize=(2, 2))


@pytest.mark.parametrize("bad,match", [
    (dict(values=torch.zeros(2, 3)), r"1:4 values has shape \[2, 3\]; expected \[M, ceil\(K/4\)\] "
                                     r"= \[2, 2\] for M=2, K=6"),
    (dict(indices=torch.zeros(2, 1, dtype=torch.int32)), r"1:4 indices has dtype torch.int32; "
                                                         r"expected torch.uint8"),
    (dict(indices=torch.zeros(2, 2, dtype=torch.uint8)), r"1:4 indices has shape \[2, 2\]; "
                                                         r"expected \[M, ceil\(K/16\)\] = \[2, 1\]"),
    (dict(offsets=torch.zeros(1, dtype=torch.int32)), r"1:4 offsets must be empty, got shape \[1\]"),
])
def test_nm14_bad_tensors_are_named(bad, match):
    t = dict(values=torch.zeros(2, 2), indices=torch.zeros(2, 1, dtype=torch.uint8),
             offsets=torch.zeros(0, dtype=torch.int32))
    t.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        sk.formats.from_parts("1:4", t["values"], t["indices"], t["offsets"], (2, 6))
    B = torch.zeros(6, 1)
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.sparsekern.spmm(t["values"], t["indices"], t["offsets"], 2, 6, "1:4", B)


@pytest.mark.parametrize("backend", ["reference", "cpu", None])
@pytest.mark.parametrize("M,K,N", [(7, 13, 1), (16, 64, 5), (33, 70, 9), (1, 3, 2)])
def test_nm14_spmm_matches_dense(backend, M, K, N):
    if backend == "cpu" and sk._extension._C is None:
        pytest.skip("the compiled CPU kernels are not built")
    gen = torch.Generator().manual_seed(M * K + N)
    W, B = _w14(M, K, seed=M + K), torch.randn(K, N, generator=gen)
    bias = torch.randn(M, generator=gen)
    A = sk.to_sparse(W, layout="1:4")
    out = torch.full((M, N), float("nan"))
    if backend is None:
        out = sk.spmm(A, B) + bias[:, None]
    else:
        with sk.use_backend(backend):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
    assert rel_err(out, dense_ref(W, B, bias)) < 1e-5


def test_nm14_runs_on_the_cpu_through_the_cached_2_4_copy():
    from sparsekern.backends import select
    if sk._extension._C is None:
        pytest.skip("the compiled CPU kernels are not built")
    assert select("1:4", torch.float32, torch.float32, torch.device("cpu")).name == "cpu"
    A = sk.to_sparse(_w14(8, 20), layout="1:4")
    first = as_semi24(A.values, A.indices, A.offsets, 8, 20)
    assert as_semi24(A.values, A.indices, A.offsets, 8, 20) is first  # built once
    assert torch.equal(sk.formats.from_parts("2:4", *first, (8, 20)).to_dense(), A.to_dense())
    with torch.no_grad():
        A.values.mul_(2)  # a weight change drops the cached copy: never a stale answer
    again = as_semi24(A.values, A.indices, A.offsets, 8, 20)
    assert again is not first
    B = torch.randn(20, 3)
    with sk.use_backend("cpu"):
        assert rel_err(sk.spmm(A, B), dense_ref(A.to_dense(), B)) < 1e-5


@pytest.mark.parametrize("N", [5, 40])  # 40: the CPU backend's dense 2:4 backward path
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_nm14_gradients_match_dense(backend, N):
    if backend == "cpu" and sk._extension._C is None:
        pytest.skip("the compiled CPU kernels are not built")
    W = _w14(6, 22, seed=4)
    lin = nn.Linear(22, 6)
    with torch.no_grad():
        lin.weight.copy_(W)
    sl = sk.SparseLinear.from_dense(lin, layout="1:4")
    x = torch.randn(N, 22, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    with sk.use_backend(backend):
        sl(x).square().sum().backward()
    lin(x2).square().sum().backward()
    assert rel_err(x.grad, x2.grad) < 1e-5
    gW = NM14(sl.values.grad, sl.indices, sl.offsets, (6, 22)).to_dense()
    mask = NM14(torch.ones_like(sl.values), sl.indices, sl.offsets, (6, 22)).to_dense()
    assert rel_err(gW, lin.weight.grad * mask) < 1e-5


def test_nm14_through_sparsify_prune_serialization_auto_and_bench(tmp_path):
    model = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 8))
    masks = prune.prune_model(model, granularity="1:4")
    x = torch.randn(3, 24)
    ref = model(x)
    out = prune.convert(model, layout="1:4")
    assert isinstance(out[0], sk.SparseLinear) and out[0].layout == "1:4"
    assert out.sparsekern_report["2"][0] == "1:4" and masks
    torch.testing.assert_close(out(x), ref, rtol=1e-5, atol=1e-5)
    sk.save_sparse(out, tmp_path / "m.safetensors")
    fresh = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 8))
    sk.load_sparse(fresh, tmp_path / "m.safetensors")
    assert fresh[0].layout == "1:4"
    torch.testing.assert_close(fresh(x), ref, rtol=1e-5, atol=1e-5)
    # a dense 2:4-sparse layer is not 1:4: left dense, with the reason
    m = nn.Linear(8, 4)
    with torch.no_grad():
        m.weight.copy_(magnitude.prune_2to4(m.weight))
    assert sk.sparsify(m, layout="1:4").sparsekern_report[""] == ("dense",
                                                                   "weight is not 1:4 sparse")
    # auto picks 1:4 when the table says it is fastest
    from sparsekern.auto.choose import synthetic_table
    model = nn.Sequential(nn.Linear(24, 16))
    with torch.no_grad():
        model[0].weight.copy_(layouts.get("1:4").magnitude_prune(model[0].weight, 0.75, None))
    t = synthetic_table({"0": (1.0, {"1:4": [(0.25, 0.3)], "2:4": [(0.5, 0.6)],
                                     "csc": [(0.25, 0.9)]})})
    sk.sparsify(model, layout="auto", latency_table=t)
    assert isinstance(model[0], sk.SparseLinear) and model[0].layout == "1:4"
    # bench: a 1:4 case is pruned and packed like any other
    from sparsekern.bench import operands
    case = cases.Case("1:4", cases.SHAPES["minilm.attn"], 1, 0.75)
    W = operands.weight(case)
    assert layouts.get("1:4").pattern_density(W, None) == 0.25


def test_nm14_bench_case_runs_every_candidate():
    from sparsekern.bench import candidates, operands
    case = cases.Case("1:4", cases.SHAPES["minilm.attn"], 2, 0.75)
    W = operands.weight(case)
    cands = candidates.build_candidates(case, W)
    assert [c.name for c in cands] == candidates.candidate_names("1:4", "cpu")
    x = torch.randn(2, W.shape[1])
    ref = x @ W.t()
    for c in cands:
        assert c.fn is not None, (c.name, c.reason)
        y = c.fn(c.prepare(x))
        y = torch.as_tensor(y)
        y = y.t() if c.out_layout == "MN" else y
        assert rel_err(y, ref) < 1e-5, c.name


def test_each_layout_says_which_pruning_patterns_it_holds():
    """The search's planned densities come from the layouts (no layout name in auto): an
    unstructured layout holds every pattern, a blocked one only its block shape, an N:M
    one every group it contains."""
    csc, bsr, s24, s14 = (layouts.get(n) for n in ("csc", "bsr", "2:4", "1:4"))
    assert csc.planned_density("fine", 0.9) == pytest.approx(0.1)
    assert csc.planned_density("block", 0.75, (16, 16)) == pytest.approx(0.25)
    assert csc.planned_density("nm", 0.5, (2, 4)) == 0.5
    assert bsr.planned_density("block", 0.75, (16, 16), (16, 16)) == pytest.approx(0.25)
    assert bsr.planned_density("block", 0.75, (16, 16), (8, 8)) is None
    assert bsr.planned_density("fine", 0.75, None, (16, 16)) is None
    assert s24.planned_density("nm", 0.75, (1, 4)) == 0.5
    assert s24.planned_density("nm", 0.5, (2, 8)) == 0.5
    assert s24.planned_density("nm", 0.5, (3, 8)) is None
    assert s14.planned_density("nm", 0.5, (2, 4)) is None
    assert s24.planned_density("fine", 0.5) is None
    with pytest.raises(ValueError, match=r"pattern must be 'fine', 'block' or 'nm', got 'kernel'"):
        csc.planned_density("kernel", 0.5)
    # A new unstructured layout is planned for every granularity by its flag alone.
    coo = layouts.Layout(**{**csc.__dict__, "name": "coo-test"})
    assert coo.planned_density("block", 0.6, (4, 4)) == pytest.approx(0.4)
