"""Shared fixtures of the Triton tests: where the kernels run and how results are compared."""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="session")
def triton_available():
    """Skip (with the reason) when the Triton backend cannot run here at all."""
    from sparsekern.backends import triton as triton_backend
    ok, why = triton_backend.available()
    if not ok:
        pytest.skip(f"triton backend unavailable: {why}")
    return True
