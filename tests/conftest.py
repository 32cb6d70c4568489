"""Test setup: Triton runs in its interpreter when no GPU is present; GPU tests skip."""
import os
import signal

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before any Triton kernel is defined (i.e. before sparsekern.triton loads).
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Triton 3.9 warns on every compile unless the fp-fusion default is set explicitly.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


# A test that hangs ends the run instead of holding it (a deadlock in the kernels' thread pool
# once held CI for its whole 90 minutes with no word of where): pytest's faulthandler prints
# every thread's stack after faulthandler_timeout (pyproject.toml), and SIGALRM's default
# action ends the process a little later, even while the hang holds the GIL.
HANG_LIMIT_S = int(os.environ.get("SPARSEKERN_TEST_HANG_LIMIT_S", "900"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not hasattr(signal, "SIGALRM") or HANG_LIMIT_S <= 0:
        yield
        return
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(HANG_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)


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


def _env_switch(monkeypatch, name):
    """set(value): set environment variable `name` (None: unset) and reload it, as a new
    process would read it (the kernels read it once at import and on
    sparsekern.backends.reload_env()). The caller restores it (monkeypatch.undo) and reloads."""
    import sparsekern as sk

    def set_value(value):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
        sk.backends.reload_env()

    return set_value


@pytest.fixture
def cpu_isa_env(monkeypatch):
    """set(value) for SPARSEKERN_CPU_ISA (see _env_switch); restored and re-read at the end."""
    import sparsekern as sk
    yield _env_switch(monkeypatch, "SPARSEKERN_CPU_ISA")
    monkeypatch.undo()
    sk.backends.reload_env()


@pytest.fixture
def cpu_scatter_env(monkeypatch):
    """set(value) for SPARSEKERN_CPU_SCATTER (see _env_switch); restored and re-read at the end."""
    import sparsekern as sk
    yield _env_switch(monkeypatch, "SPARSEKERN_CPU_SCATTER")
    monkeypatch.undo()
    sk.backends.reload_env()


@pytest.fixture
def cpu_broadcast_env(monkeypatch):
    """set(value) for SPARSEKERN_CPU_BROADCAST (see _env_switch); restored and re-read at the
    end."""
    import sparsekern as sk
    yield _env_switch(monkeypatch, "SPARSEKERN_CPU_BROADCAST")
    monkeypatch.undo()
    sk.backends.reload_env()


@pytest.fixture
def cpu_prefetch_env(monkeypatch):
    """set(value) for SPARSEKERN_CPU_PREFETCH (see _env_switch); restored and re-read at the
    end."""
    import sparsekern as sk
    yield _env_switch(monkeypatch, "SPARSEKERN_CPU_PREFETCH")
    monkeypatch.undo()
    sk.backends.reload_env()


@pytest.fixture
def cpu_pool_env(monkeypatch):
    """set(value) for SPARSEKERN_CPU_POOL (see _env_switch); restored and re-read at the end."""
    import sparsekern as sk
    yield _env_switch(monkeypatch, "SPARSEKERN_CPU_POOL")
    monkeypatch.undo()
    sk.backends.reload_env()


@pytest.fixture(autouse=True)
def _latency_cache_sees_a_quiet_machine(monkeypatch):
    """The latency table caches nothing measured on a busy machine (auto.table.machine_busy
    reads the live load) and times on fewer threads when a look at the load before timing
    finds it busy (auto.measure.for_the_load): tests that expect a cache hit must not depend
    on what else runs on the CI box. tests/auto/test_cache.py and test_trust.py check the
    busy cases themselves."""
    from sparsekern.auto import measure, table
    from sparsekern.timing.load import judge
    monkeypatch.setattr(table, "machine_busy", lambda *a: None)
    monkeypatch.setattr(measure, "detect_load", lambda **kw: judge(2, None, 0.0, 0.0))


@pytest.fixture(scope="session")
def setup_py():
    """The repository's setup.py as a module (setup() itself runs only under __main__)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "setup.py"
    spec = importlib.util.spec_from_file_location("sparsekern_setup", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
