"""pytest-benchmark suites of sparsekern (``pytest bench/ --benchmark-only``).

The cases, operands, candidates and checks come from the harness library
(sparsekern.bench); this file only wires them into pytest. By default a small
representative subset runs; SPARSEKERN_BENCH_FULL=1 selects the full matrix.
SPARSEKERN_BENCH_THREADS fixes the thread count (default: all usable CPUs); it is recorded
in the benchmark JSON's machine_info with the rest of the machine facts.
"""
import os

import pytest
import torch

from sparsekern.bench import machine

HAS_CUDA = torch.cuda.is_available()
THREADS_ENV = "SPARSEKERN_BENCH_THREADS"


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def fixed_threads():
    """One thread count for the whole session (torch, BLAS, OpenMP)."""
    with machine.ThreadSetting(int(os.environ.get(THREADS_ENV, "0")) or None) as t:
        yield t.threads


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add sparsekern's machine facts (CPU, ISA, BLAS, threads, versions, GPU)."""
    machine_info["sparsekern"] = machine.facts("cuda" if HAS_CUDA else "cpu")
