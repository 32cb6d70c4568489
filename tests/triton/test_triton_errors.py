"""What the Triton backend rejects, and what it reports it supports (interpreter on CPU)."""
import pytest
import torch

import sparsekern as sk
from sparsekern.backends import triton as triton_backend
from sparsekern.backends import use_backend
from sparsekern.formats import from_parts

pytestmark = pytest.mark.usefixtures("triton_available")


def run(values, indices, offsets, M, K, layout, B):
    with use_backend("triton"):
        return torch.ops.sparsekern.spmm(values, indices, offsets, M, K, layout, B)


def bsr_parts():
    """A 32 x 48 weight with every 16 x 16 block stored: offsets [0, 3, 6]."""
    A = sk.to_sparse(torch.randn(32, 48), "bsr", blocksize=(16, 16))
    return A.values.clone(), A.indices.clone(), A.offsets.clone()


def csc_parts():
    W = torch.randn(20, 12) * (torch.arange(240).reshape(20, 12) % 3 == 0)
    A = sk.to_sparse(W, "csc")
    return A.values.clone(), A.indices.clone(), A.offsets.clone()


def test_bsr_block_column_out_of_range():
    values, indices, offsets = bsr_parts()
    indices[1] = 3  # K = 48 has block columns 0..2
    with pytest.raises(ValueError, match=r"bsr block-column indices\[1\]=3 is out of range"):
        run(values, indices, offsets, 32, 48, "bsr", torch.randn(48, 2))


def test_bsr_negative_block_column():
    values, indices, offsets = bsr_parts()
    indices[0] = -1
    with pytest.raises(ValueError, match=r"indices\[0\]=-1 is out of range"):
        run(values, indices, offsets, 32, 48, "bsr", torch.randn(48, 2))


def test_bsr_offsets_past_the_blocks():
    values, indices, offsets = bsr_parts()
    offsets[-1] = offsets[-1] + 5
    with pytest.raises(ValueError, match=r"bsr offsets must end at the number of stored entries"):
        run(values, indices, offsets, 32, 48, "bsr", torch.randn(48, 2))


def test_bsr_decreasing_offsets():
    A = sk.to_sparse(torch.randn(48, 48), "bsr", blocksize=(16, 16))  # offsets [0, 3, 6, 9]
    offsets = torch.tensor([0, 5, 2, 9], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"bsr offsets must not decrease: offsets\[2\]=2 < "
                                         r"offsets\[1\]=5"):
        run(A.values, A.indices, offsets, 48, 48, "bsr", torch.randn(48, 2))


def test_csc_row_out_of_range():
    values, indices, offsets = csc_parts()
    indices[2] = 20  # M = 20
    with pytest.raises(ValueError, match=r"csc row indices\[2\]=20 is out of range"):
        run(values, indices, offsets, 20, 12, "csc", torch.randn(12, 3))


def test_csc_offsets_not_starting_at_zero():
    values, indices, offsets = csc_parts()
    offsets[0] = 1
    with pytest.raises(ValueError, match=r"csc offsets must start at 0"):
        run(values, indices, offsets, 20, 12, "csc", torch.randn(12, 3))


def test_semi24_positions_not_increasing():
    W = torch.zeros(4, 8)
    W[:, 1] = 1.0
    W[:, 2] = 2.0
    A = sk.to_sparse(W, "2:4")
    indices = A.indices.clone()
    indices[2, 0] = (indices[2, 0] & 0xF0) | 0b0110  # group 0 of row 2: positions (2, 1)
    with pytest.raises(ValueError, match=r"2:4 indices row 2, group 0: positions \(2, 1\)"):
        run(A.values, indices, A.offsets, 4, 8, "2:4", torch.randn(8, 1))


def test_index_edited_in_place_after_a_good_call_is_checked_again():
    """Validation is cached per weight, but an in-place edit (version bump) rechecks."""
    values, indices, offsets = bsr_parts()
    B = torch.randn(48, 2)
    run(values, indices, offsets, 32, 48, "bsr", B)
    indices[0] = 7
    with pytest.raises(ValueError, match=r"indices\[0\]=7 is out of range"):
        run(values, indices, offsets, 32, 48, "bsr", B)


def test_good_weight_is_validated_once(monkeypatch):
    calls = []
    real = triton_backend.check_format_structure
    monkeypatch.setattr(triton_backend, "check_format_structure",
                        lambda *a: calls.append(1) or real(*a))
    A = from_parts("bsr", *bsr_parts(), (32, 48))
    B = torch.randn(48, 2)
    for _ in range(3):
        with use_backend("triton"):
            sk.spmm(A, B)
    assert len(calls) == 1


def test_supports():
    cpu = torch.device("cpu")
    for layout in ("2:4", "bsr", "csc"):
        for dt in (torch.float32, torch.float16):
            assert triton_backend.supports(layout, dt, dt, cpu)
        # The interpreter computes bfloat16 wrongly: not offered there.
        assert not triton_backend.supports(layout, torch.bfloat16, torch.bfloat16, cpu)
        assert triton_backend.supports(layout, torch.bfloat16, torch.bfloat16,
                                       torch.device("cuda"))
        # Weight-only compression (half values, float32 B) is left to other backends.
        assert not triton_backend.supports(layout, torch.float16, torch.float32, cpu)
        assert not triton_backend.supports(layout, torch.float64, torch.float64, cpu)
    assert not triton_backend.supports("coo", torch.float32, torch.float32, cpu)


def test_forced_with_an_unsupported_dtype_raises():
    A = sk.to_sparse(torch.randn(8, 8).double(), "csc")
    with use_backend("triton"):
        with pytest.raises(RuntimeError, match=r"backend 'triton' does not support"):
            sk.spmm(A, torch.randn(8, 2).double())


def test_unavailable_without_cuda_or_interpreter(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the backend is available without the interpreter")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, why = triton_backend.available()
    assert not ok and "TRITON_INTERPRET" in why
    assert not triton_backend.supports("csc", torch.float32, torch.float32, torch.device("cpu"))
