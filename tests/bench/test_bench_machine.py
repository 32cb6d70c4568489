"""Machine facts, thread setting, calibration, self-time collection, the smoke run."""
import json
import os
import sys
import types

import pytest
import torch

from sparsekern import _extension
from sparsekern.bench import machine, selftime, smoke


def test_facts_are_json_and_name_the_essentials():
    f = machine.facts("cpu")
    json.dumps(f)
    assert f["cpu"]["usable_cpus"] >= 1 and f["cpu"]["logical_cpus"] >= 1
    assert isinstance(f["cpu"]["isa_flags"], list)
    assert f["versions"]["torch"] == torch.__version__
    assert "blas_info" in f["torch_blas"]
    assert f["backends"]["reference"]["available"] is True
    assert f["threads"]["torch_threads"] >= 1


@pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
def test_facts_record_a_bad_pool_variable_as_its_error(cpu_pool_env):
    """Facts never fail: a bad SPARSEKERN_CPU_POOL is recorded as the kernels' error."""
    cpu_pool_env("openmp")
    pool = machine.facts("cpu")["threads"]["sparsekern_cpu_pool"]
    assert pool.startswith("error: SPARSEKERN_CPU_POOL='openmp' is not a thread pool choice")


def test_thread_setting_fixes_and_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    before = torch.get_num_threads()
    with machine.ThreadSetting(1) as t:
        assert t.threads == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == before
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "7"
    assert machine.ThreadSetting(None).threads == machine.usable_cpus()


def test_thread_setting_rejects_negative():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        machine.ThreadSetting(-2)


def test_calibrate_reports_positive_rates():
    c = machine.calibrate("cpu", seconds=0.02)
    assert c["gemm_gflops"] > 0 and c["copy_gbps"] > 0
    assert c["balance_flop_per_byte"] == pytest.approx(c["gemm_gflops"] / c["copy_gbps"])


def test_selftime_collects_rows_and_errors(monkeypatch):
    good = types.ModuleType("fake_good")
    good.rows = lambda device: [{"kernel": "x", "ms": torch.tensor(1.5), "device": device}]
    bad = types.ModuleType("fake_bad")

    def boom():
        raise RuntimeError("no GPU")
    bad.rows = boom
    monkeypatch.setitem(sys.modules, "fake_good", good)
    monkeypatch.setitem(sys.modules, "fake_bad", bad)
    monkeypatch.setattr(selftime, "SOURCES", (("a", "fake_good", "rows", True),
                                              ("b", "fake_bad", "rows", False),
                                              ("c", "fake_missing_module", "rows", False)))
    out = selftime.collect("cuda")
    assert out["a"] == [{"kernel": "x", "ms": 1.5, "device": "cuda"}]
    assert "raised RuntimeError: no GPU" in out["b"]["error"]
    assert "not importable" in out["c"]["error"]
    json.dumps(out)


def test_smoke_runs_every_layout_on_cpu(capsys):
    assert smoke.run("cpu") == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == len(smoke.SHAPES) * len(smoke.LAYOUTS)


@pytest.mark.parametrize("text, want", [("32768K", 32 << 20), ("2M", 2 << 20), ("1G", 1 << 30),
                                        ("4096", 4096), (" 8K\n", 8 << 10), ("big", None),
                                        ("", None)])
def test_cache_size_parsing(text, want):
    from sparsekern.timing.machine import _size_bytes  # moved: timing facts are shared
    assert _size_bytes(text) == want


def test_last_level_cache_is_positive():
    from sparsekern.bench.machine import facts, last_level_cache_bytes
    assert last_level_cache_bytes() > 0
    assert facts()["cpu"]["llc_bytes"] == last_level_cache_bytes()
