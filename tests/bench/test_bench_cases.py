"""The benchmark matrix (sparsekern.bench.cases)."""
import pytest

from sparsekern.bench import cases
from sparsekern.bench.cases import SHAPES, Case

SQ = SHAPES["minilm.attn"]


def test_full_matrix_covers_every_shape_n_sparsity_layout():
    full = cases.full_matrix()
    assert {c.shape.name for c in full} == set(SHAPES)
    assert {c.N for c in full} == {1, 8, 32, 128, 512}
    assert {c.sparsity for c in full if c.layout not in ("2:4", "1:4")} == {0.5, 0.7, 0.9, 0.95}
    assert {c.sparsity for c in full if c.layout == "2:4"} == {0.5}
    assert {c.sparsity for c in full if c.layout == "1:4"} == {0.75}
    assert {c.blocksize for c in full if c.layout == "bsr"} == {(4, 4), (16, 16), (32, 32)}
    assert {c.variant for c in full} >= {"2:4", "bsr32x32", "csc", "csc-relu"}
    # 1:4 and 2:4 once, bsr32 4 sparsities, 2 other blocks x 2, csc 4; csc-relu 4 at 2 Ns;
    # sell (a GEMV layout: N <= 2) 4 at N=1
    assert len(full) == len(SHAPES) * (5 * (1 + 1 + 4 + 4 + 4) + 2 * 4 + 4)
    assert {c.N for c in full if c.layout == "sell"} == {1}
    assert {c.N for c in full if c.activation == "relu"} == {1, 8}


@pytest.mark.parametrize("name", ["quick", "full", "suite"])
def test_ids_are_unique(name):
    ids = [c.id for c in cases.matrix(name)]
    assert len(ids) == len(set(ids))


def test_quick_and_suite_are_subsets_of_full():
    full = {c.id for c in cases.full_matrix()}
    assert {c.id for c in cases.quick_matrix()} <= full
    assert {c.id for c in cases.suite_matrix()} <= full


def test_every_layout_is_in_the_quick_and_suite_matrices():
    for m in (cases.quick_matrix(), cases.suite_matrix()):
        assert {c.variant for c in m} >= {"2:4", "bsr32x32", "csc", "csc-relu"}


def test_suite_is_full_with_env(monkeypatch):
    monkeypatch.setenv(cases.FULL_ENV, "1")
    assert len(cases.matrix("suite")) == len(cases.full_matrix())
    monkeypatch.setenv(cases.FULL_ENV, "0")
    assert len(cases.matrix("suite")) == len(cases.suite_matrix())


def test_consecutive_cases_share_weights():
    """Ordered so that N varies fastest: a weight is built once for all its N."""
    from sparsekern.bench.operands import weight_key
    keys = [(c.variant, weight_key(c)) for c in cases.full_matrix()]
    changes = sum(1 for a, b in zip(keys, keys[1:]) if a != b) + 1
    assert changes == len(set(keys))


def test_case_id_and_variant():
    c = Case("bsr", SHAPES["llama.attn"], 8, 0.9, (32, 32))
    assert c.id == "bsr32x32/llama.attn-4096x4096/N8/s90"
    assert Case("csc", SQ, 1, 0.9, activation="relu").variant == "csc-relu"
    assert c.to_dict()["M"] == 4096 and c.to_dict()["blocksize"] == [32, 32]


@pytest.mark.parametrize("kwargs,match", [
    (dict(layout="coo", sparsity=0.5), "layout must be"),
    (dict(layout="2:4", sparsity=0.9), "a 2:4 case has sparsity 0.5"),
    (dict(layout="bsr", sparsity=0.9), "blocksize .* is required for bsr"),
    (dict(layout="csc", sparsity=0.9, blocksize=(4, 4)), "blocksize .* only for bsr"),
    (dict(layout="csc", sparsity=1.0), r"sparsity must be in \[0, 1\)"),
    (dict(layout="csc", sparsity=0.5, N=0), "N must be >= 1"),
    (dict(layout="csc", sparsity=0.5, activation="gelu"), "activation must be one of"),
])
def test_bad_cases_are_rejected(kwargs, match):
    args = dict(shape=SQ, N=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Case(**args)


def test_select_layouts():
    q = cases.quick_matrix()
    assert {c.layout for c in cases.select_layouts(q, ["csc"])} == {"csc"}
    assert {c.variant for c in cases.select_layouts(q, ["csc"])} == {"csc", "csc-relu"}
    assert {c.variant for c in cases.select_layouts(q, ["csc-relu"])} == {"csc-relu"}
    assert {c.variant for c in cases.select_layouts(q, ["bsr16x16"])} == {"bsr16x16"}
    assert cases.select_layouts(q, []) == q


def test_select_unknown_layout_raises():
    with pytest.raises(ValueError, match="unknown layout 'coo'"):
        cases.select_layouts(cases.quick_matrix(), ["coo"])


def test_unknown_matrix_name_raises():
    with pytest.raises(ValueError, match="matrix name must be"):
        cases.matrix("medium")
