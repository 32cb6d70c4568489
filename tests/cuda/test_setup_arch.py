"""setup.py's CUDA targets: TORCH_CUDA_ARCH_LIST honoured, PTX embedded by default."""
import pytest


@pytest.fixture
def setup_module_(setup_py):
    return setup_py


def gencode(arch, code):
    return f"-gencode=arch=compute_{arch},code={code}"


def test_default_is_sm80_sm90a_and_compute80_ptx(setup_module_, monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert setup_module_.cuda_arch_flags() == [
        gencode("80", "sm_80"), gencode("80", "compute_80"), gencode("90a", "sm_90a")]


@pytest.mark.parametrize("value,expected", [
    ("9.0a", [gencode("90a", "sm_90a")]),
    ("8.0;9.0+PTX", [gencode("80", "sm_80"), gencode("90", "sm_90"), gencode("90", "compute_90")]),
    ("8.6 8.9", [gencode("86", "sm_86"), gencode("89", "sm_89")]),
    ("Hopper", [gencode("90a", "sm_90a")]),
    ("9.0a,9.0a", [gencode("90a", "sm_90a")]),
])
def test_torch_cuda_arch_list_is_honoured(setup_module_, monkeypatch, value, expected):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", value)
    assert setup_module_.cuda_arch_flags() == expected


@pytest.mark.parametrize("value,match", [
    ("7.5", r"entry '7.5': the CUDA kernels need compute capability 8.0"),
    ("sm_90", r"entry 'sm_90' is not X.Y, X.Ya or X.Y\+PTX"),
    (" ; ", r"names no architecture"),
])
def test_bad_arch_lists_are_rejected(setup_module_, value, match):
    with pytest.raises(ValueError, match=match):
        setup_module_.cuda_arch_flags(value)
