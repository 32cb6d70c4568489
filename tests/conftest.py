"""Test setup: Triton runs in its interpreter when no GPU is present; GPU tests skip."""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before any Triton kernel is defined (i.e. before sparsekern.triton loads).
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Triton 3.9 warns on every compile unless the fp-fusion default is set explicitly.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker, not item.keywords: keywords also hold the names of parent folders, so a
        # checkout in a folder called "gpu" would skip every test.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def poison_output():
    """Every op output starts as NaN, so an element a kernel forgets to write fails."""
    from sparsekern import _output
    with _output.poisoned_outputs():
        yield


@pytest.fixture
def cpu_isa_env(monkeypatch):
    """set(value): set SPARSEKERN_CPU_ISA (None: unset) and reload it, as a new process would
    read it (the kernels read it once at import and on sparsekern.backends.reload_env()).
    The variable is restored, and read again, when the test ends."""
    import sparsekern as sk

    def set_isa(value):
        if value is None:
            monkeypatch.delenv("SPARSEKERN_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("SPARSEKERN_CPU_ISA", value)
        sk.backends.reload_env()

    yield set_isa
    monkeypatch.undo()
    sk.backends.reload_env()


@pytest.fixture
def cpu_pool_env(monkeypatch):
    """set(value): set SPARSEKERN_CPU_POOL (None: unset) and reload it (read once at import and
    on sparsekern.backends.reload_env()). Restored, and read again, when the test ends."""
    import sparsekern as sk

    def set_pool(value):
        if value is None:
            monkeypatch.delenv("SPARSEKERN_CPU_POOL", raising=False)
        else:
            monkeypatch.setenv("SPARSEKERN_CPU_POOL", value)
        sk.backends.reload_env()

    yield set_pool
    monkeypatch.undo()
    sk.backends.reload_env()
