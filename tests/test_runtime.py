"""sparsekern.keep_freed_memory: the mallopt calls it makes (a fake mallopt), its rejections,
and on glibc, in a fresh process, that a large tensor freed and allocated again stops
faulting pages in."""
import subprocess
import sys
import textwrap

import pytest

import sparsekern as sk
from sparsekern import runtime


class FakeMallopt:
    """Records (param, value) calls; refuses those listed in `refuse`."""

    def __init__(self, refuse=()):
        self.calls, self.refuse = [], set(refuse)

    def __call__(self, param, value):
        self.calls.append((param, value))
        return 0 if (param, value) in self.refuse else 1


MMAP, TRIM = runtime._M_MMAP_THRESHOLD, runtime._M_TRIM_THRESHOLD


def test_sets_mmap_then_trim_threshold(monkeypatch):
    f = FakeMallopt()
    assert runtime._keep_freed_memory(123 << 20, f) is True
    assert f.calls == [(MMAP, 123 << 20), (TRIM, 123 << 20)]
    f = FakeMallopt()
    monkeypatch.setattr(runtime, "_glibc_mallopt", lambda: f)
    assert sk.keep_freed_memory() is True  # the default: 1 GiB
    assert f.calls == [(MMAP, 1 << 30), (TRIM, 1 << 30)]
    f.calls.clear()
    assert sk.keep_freed_memory(32 << 20) is True  # the smallest accepted
    assert f.calls == [(MMAP, 32 << 20), (TRIM, 32 << 20)]


def test_old_glibc_mmap_limit_falls_back_to_32_mb():
    f = FakeMallopt(refuse={(MMAP, 1 << 30)})
    assert runtime._keep_freed_memory(1 << 30, f) is True
    assert f.calls == [(MMAP, 1 << 30), (MMAP, 32 << 20), (TRIM, 1 << 30)]


@pytest.mark.parametrize("refuse, name", [
    ({(MMAP, 1 << 30), (MMAP, 32 << 20)}, "M_MMAP_THRESHOLD"),
    ({(TRIM, 1 << 30)}, "M_TRIM_THRESHOLD"),
])
def test_refused_setting_raises(refuse, name):
    with pytest.raises(RuntimeError, match=f"refused {name} = {1 << 30} \\(max_bytes\\)"):
        runtime._keep_freed_memory(1 << 30, FakeMallopt(refuse))


def test_trim_is_never_set_without_the_mmap_threshold():
    f = FakeMallopt(refuse={(MMAP, 1 << 30), (MMAP, 32 << 20)})
    with pytest.raises(RuntimeError):
        runtime._keep_freed_memory(1 << 30, f)
    assert all(param == MMAP for param, _ in f.calls)


@pytest.mark.parametrize("bad, exc, msg", [
    (True, TypeError, "max_bytes must be an int, got bool"),
    (1.5e9, TypeError, "max_bytes must be an int, got float"),
    ("1G", TypeError, "max_bytes must be an int, got str"),
    (None, TypeError, "max_bytes must be an int, got NoneType"),
    (-1, ValueError, r"max_bytes must be in \[33554432, 2147483647\] .*got -1"),
    # 0 or anything under 32 MiB would make glibc mmap (and fault) more, not less
    (0, ValueError, r"max_bytes must be in \[33554432, 2147483647\] \(at least 32 MiB.*got 0$"),
    (65536, ValueError, r"a smaller one faults more.*got 65536$"),
    ((32 << 20) - 1, ValueError, r"got 33554431$"),
    (2**31, ValueError, r"max_bytes must be in \[33554432, 2147483647\] .*got 2147483648"),
])
def test_rejects_bad_max_bytes(bad, exc, msg, monkeypatch):
    f = FakeMallopt()
    monkeypatch.setattr(runtime, "_glibc_mallopt", lambda: f)
    with pytest.raises(exc, match=msg):
        sk.keep_freed_memory(bad)
    assert f.calls == []


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime._glibc_mallopt() is None
    assert sk.keep_freed_memory(64 << 20) is False


_FAULTS = textwrap.dedent("""
    import resource, statistics, torch
    import sparsekern as sk

    def faults_per_cycle(n=7):
        counts = []
        for _ in range(n):
            r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.empty(12 << 20).fill_(1.0)  # 48 MB: past glibc's largest moving threshold
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
        return counts

    before = faults_per_cycle()
    applied = sk.keep_freed_memory(256 << 20)
    after = faults_per_cycle()
    print(min(before), applied, statistics.median(after))
""")


@pytest.mark.skipif(runtime._glibc_mallopt() is None, reason="needs glibc's mallopt")
def test_glibc_stops_faulting_on_a_freed_large_tensor():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    before, applied, after = out.stdout.split()
    # 48 MB is 12,288 pages: every cycle faulted them in again before; after, the block comes
    # back from the heap (the first cycles after the call may still move it there).
    assert float(before) > 5000, out.stdout
    assert applied == "True"
    assert float(after) < 100, out.stdout
