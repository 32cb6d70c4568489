"""Every test here gets its own empty latency cache ($SPARSEKERN_CACHE -> a tmp folder)."""
import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"
